"""`meshlm bench train|compile`: training throughput, FLOP/s and MFU with compile time apart; compile time by depth.

Every figure that is compared is measured in the same run with the contestants taking turns, so load from
other processes falls on all of them alike; medians are reported.
"""

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from meshlm.experiments.bench.probes import matmul_probe
from meshlm.experiments.bench.timing import interleaved
from meshlm.model import flops
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from meshlm.training import config as config_lib
from meshlm.training import mfu
from meshlm.training import setup as setup_lib

BATCH = 12  # sequences per step unless --set train.batch_size=N: the CPU benchmark shape (cpu-small)


def data_parallel_devices(batch: int) -> list:
    """The most local devices (of one kind) whose count divides the batch."""
    devices = jax.devices()
    n = max(d for d in range(1, len(devices) + 1) if batch % d == 0)
    return devices[:n]


def build_train_step(cfg: config_lib.Config, devices: list):
    """(compiled call (state, batch), state, batch, trace s, compile s) for random batches, data parallel over
    `devices`: one call runs train.steps_per_call steps, as the trainer's calls between logs do. A batch ramp is
    switched off: every timed step is a full batch, as after the ramp."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ramp_tokens=0))
    B, T, N = cfg.train.batch_size, cfg.seq_len, cfg.train.steps_per_call
    setup = setup_lib.build(cfg, Partitioner.build(MeshConfig(shape=f"data={len(devices)}"), devices))
    state = setup.init_state()
    shape = (N, B, T + 1) if N > 1 else (B, T + 1)
    tokens = np.random.default_rng(cfg.train.seed).integers(0, cfg.model.vocab_size, shape, dtype=np.int32)
    batch = setup.partitioner.global_batch({"inputs": tokens[..., :-1], "targets": tokens[..., 1:]}, B, stacked=N > 1)
    start = time.perf_counter()
    lowered = setup.lower(state, batch, stacked=N > 1)
    traced = time.perf_counter()
    compiled = lowered.compile()
    # The program takes each step's rate as an argument (training/train_step.py); any rate costs the same.
    rates = setup.partitioner.place_replicated(np.full((N,) if N > 1 else (), cfg.train.optimizer.peak_lr, np.float32))
    return (lambda s, b: compiled(s, b, rates)), state, batch, traced - start, time.perf_counter() - traced


def bench_train(
    cfg: config_lib.Config, steps: int, warmup: int, against: list[str], profile_dir: str | None = None
) -> dict:
    """Train-step figures; `profile_dir`: a jax.profiler trace of the timed turns there (TensorBoard, xprof)."""
    from meshlm.experiments.reference import torch_gpt2  # torch itself is imported only when asked for

    for name in against:
        torch_gpt2.check(name, cfg.model)
    B, T, N = cfg.train.batch_size, cfg.seq_len, cfg.train.steps_per_call
    devices = data_parallel_devices(B)
    compiled, state, batch, trace_s, compile_s = build_train_step(cfg, devices)
    holder = [state]

    def meshlm_step():
        holder[0], metrics = compiled(holder[0], batch)
        jax.block_until_ready(metrics)
        return metrics

    if (done := int(meshlm_step()["tokens"].sum())) != B * T * N:
        raise RuntimeError(
            f"the timed call trained on {done} tokens, not its batches' {B * T * N}: the figures would lie"
        )

    contestants = {"meshlm": meshlm_step}
    for name in against:
        contestants[name] = torch_gpt2.make_step(
            name, cfg.model, cfg.train.optimizer, batch=B, seq_len=T, seed=cfg.train.seed
        )
    on_cpu = devices[0].platform == "cpu"
    if on_cpu:
        contestants["matmul"], probe_flops = matmul_probe()
    interleaved(contestants, warmup)
    with jax.profiler.trace(profile_dir) if profile_dir else contextlib.nullcontext():
        times = {k: statistics.median(v) for k, v in interleaved(contestants, steps).items()}
    times["meshlm"] /= N  # one meshlm turn is a call of N steps

    per_token = flops.flops_per_token(cfg.model, T)
    step_flops = per_token.total * B * T
    achieved = step_flops / times["meshlm"]
    if on_cpu:
        peak = probe_flops / times["matmul"]
        peak_source = f"measured f32 1024x1024 matmul, median of {steps} probes between the steps"
    else:
        peak, peak_source = mfu.device_peak(devices)
    result = dict(
        preset=cfg.preset,
        n_layers=cfg.model.n_layers,
        d_model=cfg.model.d_model,
        batch=B,
        seq_len=T,
        dtype=cfg.model.dtype,
        attention=cfg.model.attention,
        remat=cfg.model.remat,
        steps_per_call=N,
        devices=len(devices),
        device_kind=devices[0].device_kind,
        steps=steps,
        trace_s=trace_s,
        compile_s=compile_s,
        step_s=times["meshlm"],
        tokens_per_s=B * T / times["meshlm"],
        flops_per_token=per_token.total,
        flop_formula=flops.formula(cfg.model),
        flops_per_step=step_flops,
        flops_per_s=achieved,
        peak_flops_per_s=peak,
        peak_source=peak_source,
        mfu=achieved / peak,
        against={
            name: dict(step_s=times[name], tokens_per_s=B * T / times[name], ratio=times[name] / times["meshlm"])
            for name in against
        },
    )
    if on_cpu:
        result["matmul_flops_per_s"] = peak
    return result


def bench_compile(cfg: config_lib.Config, layers: list[int], repeats: int) -> dict:
    """Seconds to lower and compile the train step at each depth (abstract inputs: nothing is allocated)."""

    def compile_at(n_layers: int) -> Callable[[], object]:
        setup = setup_lib.build(config_lib.apply_overrides(cfg, [f"model.n_layers={n_layers}"]))
        batch = setup.abstract_batch(keys=("inputs", "targets"))
        # A fresh jit each time, so nothing is cached between repeats.
        return lambda: setup.lower(batch=batch, fresh=True).compile()

    times = interleaved({L: compile_at(L) for L in layers}, repeats)
    seconds = {L: statistics.median(t) for L, t in times.items()}
    return dict(
        preset=cfg.preset,
        d_model=cfg.model.d_model,
        repeats=repeats,
        compile_s={str(L): s for L, s in seconds.items()},
        ratio=seconds[max(layers)] / seconds[min(layers)],
    )


def train_text(r: dict) -> str:
    lines = [
        f"meshlm bench train: {r['preset']}, {r['n_layers']} layers, d_model {r['d_model']}, batch {r['batch']} x "
        f"{r['seq_len']} tokens, "
        f"{r['dtype']}, attention {r['attention']}, remat {r['remat']}, {r['devices']} x {r['device_kind']} (data "
        "parallel)",
        f"compile      {r['trace_s'] + r['compile_s']:.1f} s  (trace {r['trace_s']:.1f} s + XLA {r['compile_s']:.1f} "
        "s; not in the step time)",
        f"step time    {r['step_s'] * 1e3:.0f} ms  (median of {r['steps']}"
        + (
            f" calls of {r['steps_per_call']} steps, divided by {r['steps_per_call']})"
            if r["steps_per_call"] > 1
            else ")"
        ),
        f"tokens/s     {r['tokens_per_s']:,.0f}",
        f"FLOPs/token  {r['flops_per_token'] / 1e6:.1f}M = {r['flop_formula']}",
        f"FLOP/s       {r['flops_per_s'] / 1e9:.1f}G",
        f"peak         {r['peak_flops_per_s'] / 1e9:.1f}G FLOP/s ({r['peak_source']})",
        f"MFU          {r['mfu']:.3f} = FLOP/s / peak"
        + ("  (on CPU: the ratio to the in-run matmul rate)" if "matmul_flops_per_s" in r else ""),
    ]
    for name, ref in r["against"].items():
        lines.append(
            f"{name:12s} {ref['tokens_per_s']:,.0f} tokens/s (step {ref['step_s'] * 1e3:.0f} ms); meshlm / {name} = "
            f"{ref['ratio']:.2f}"
        )
    return "\n".join(lines)


def compile_text(r: dict) -> str:
    parts = [f"{L} layers {s:.1f} s" for L, s in r["compile_s"].items()]
    return (
        f"meshlm bench compile: {r['preset']} (d_model {r['d_model']}), train step, median of {r['repeats']}: "
        + ", ".join(parts)
        + f"; deepest / shallowest = {r['ratio']:.2f}"
    )
