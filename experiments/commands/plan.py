"""`meshlm plan`: per-device memory, FLOPs and step time of a preset on a mesh; XLA's view where CPU can simulate it."""

import dataclasses
import json
import math

import jax

from meshlm.experiments.commands import _flags
from meshlm.model.config import REMATS
from meshlm.model.errors import ConfigError
from meshlm.parallel import hardware, planner
from meshlm.parallel.checks import check_mesh
from meshlm.parallel.devices import set_cpu_devices
from meshlm.parallel.sharding import Partitioner
from meshlm.training import config as config_lib
from meshlm.training import recipe
from meshlm.training import setup as setup_lib

MAX_SIMULATED = 8  # --xla auto: meshes this small compile for simulated CPU devices in seconds to a minute
GiB = 2**30


DESCRIPTION = (
    "Per-device memory (parameters, gradients, optimizer state, activations under the remat policy), FLOPs per step "
    "and step time at a stated MFU, from shapes alone. When --chips is small enough to simulate on CPU, XLA's memory "
    "analysis of the real train step is printed too (compiled ahead of time from abstract shapes; nothing is "
    "allocated). See docs/parallelism.md."
)


def add_arguments(p) -> None:
    _flags.add_config_args(p)
    p.add_argument(
        "--mesh", required=True, metavar="SPEC", help="e.g. fsdp=-1, data=2,fsdp=2,tensor=2 or dcn_data=2,fsdp=-1"
    )
    p.add_argument(
        "--device", required=True, metavar="KIND", help="tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e, a100, h100, h200"
    )
    p.add_argument(
        "--chips",
        type=_flags.at_least(1),
        metavar="N",
        help="devices in the mesh (default: the product of the mesh's sizes)",
    )
    p.add_argument(
        "--batch", type=_flags.at_least(1), metavar="B", help="global batch in sequences (default train.batch_size)"
    )
    p.add_argument("--seq-len", type=_flags.at_least(1), metavar="T", help="tokens per sequence (default model.n_ctx)")
    p.add_argument(
        "--micro-batches",
        type=_flags.at_least(1),
        metavar="M",
        help="gradient accumulation steps (default train.micro_batches)",
    )
    p.add_argument(
        "--remat",
        metavar="POLICY",
        help=f"{' | '.join(REMATS)} (sets model.remat)",
    )
    p.add_argument(
        "--mfu",
        type=_flags.number(0, 1, low_open=True),
        default=0.4,
        help="model FLOP utilisation assumed for the step time (default 0.4)",
    )
    p.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="XLA's memory analysis on a simulated CPU mesh (auto: when --chips <= 8)",
    )
    _flags.add_json(p)


def run(args) -> None:
    flags = {
        "train.batch_size": args.batch,
        "train.seq_len": args.seq_len,
        "train.micro_batches": args.micro_batches,
        "model.remat": args.remat,
    }
    overrides = list(args.set) + [f"mesh.shape={args.mesh}"] + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = config_lib.from_preset(args.preset, overrides)
    chips = args.chips or cfg.mesh.fixed_devices
    sizes = cfg.mesh.axis_sizes(chips)
    if math.prod(sizes.values()) != chips:
        raise ConfigError(
            f"mesh {args.mesh!r} uses {math.prod(sizes.values())} of the {chips} chips; use -1 for one axis or change "
            "--chips"
        )
    # The preset's batch, accumulated from ramp chunks that span the data-parallel devices; --batch or
    # --micro-batches plan that plain batch instead.
    ramped = recipe.fit_to_mesh(cfg.train, sizes["data"] * sizes["fsdp"])
    plain = dataclasses.replace(cfg.train, ramp_tokens=0)
    preset_batch = args.batch is None and args.micro_batches is None
    cfg = dataclasses.replace(cfg, train=recipe.as_accumulation(ramped if preset_batch else plain))
    if args.batch is None:  # the config's batch, raised to one sequence per data-parallel device if smaller
        dp = sizes["data"] * sizes["fsdp"] * cfg.train.micro_batches
        cfg = config_lib.apply_overrides(cfg, [f"train.batch_size={-(-cfg.train.batch_size // dp) * dp}"])
    cfg = cfg.validate()
    check_mesh(
        sizes,
        sequence_parallel=cfg.mesh.sequence_parallel,
        model=cfg.model,
        batch_size=cfg.train.batch_size,
        micro_batches=cfg.train.micro_batches,
        seq_len=cfg.seq_len,
        context_impl=cfg.mesh.context_impl,
    )
    p = planner.plan(cfg.model, cfg.train, cfg.mesh, chips=chips, device=args.device, mfu=args.mfu)
    if p.peak_flops is None or p.hbm is None:
        raise ConfigError(f"unknown device {args.device!r}; use one of {', '.join(hardware.names())}")
    xla = None
    if args.xla == "on" or (args.xla == "auto" and chips <= MAX_SIMULATED):
        # The simulated devices cut into the mesh's slices in order (CPU devices belong to no slice).
        per_slice = chips // p.slices
        partitioner = Partitioner.build(cfg.mesh, _cpu_devices(chips), slice_of=lambda d: d.id // per_slice)
        xla = setup_lib.build(cfg, partitioner).memory_analysis()
    if args.json:
        print(
            json.dumps(
                {
                    **dataclasses.asdict(p),
                    "preset": args.preset,
                    "total": p.total,
                    "step_time": p.step_time,
                    "ici_time": p.ici_time,
                    "dcn_time": p.dcn_time,
                    "xla": xla,
                }
            )
        )
    else:
        print(_text(args.preset, cfg, p, xla))


def _cpu_devices(n: int) -> list:
    try:
        set_cpu_devices(n)
    except ConfigError:  # JAX already started (e.g. in tests): use the CPU devices it has
        pass
    devices = jax.devices("cpu")
    if len(devices) < n:
        raise ConfigError(
            f"XLA's analysis needs {n} CPU devices but this process has {len(devices)}; run meshlm plan in a fresh "
            "process or pass --xla off"
        )
    return devices[:n]


def _text(preset: str, cfg, p, xla: dict | None) -> str:
    m, t = cfg.model, cfg.train
    mesh = ",".join(f"{a}={s}" for a, s in p.mesh.items())
    rows = [
        ("parameters", p.params, f"{m.param_dtype}, sharded by the rules"),
        ("gradients", p.grads, "like the parameters"),
        ("optimizer state", p.optimizer, "AdamW mu and nu, like the parameters"),
        (
            "activations",
            p.activations,
            f"remat {p.remat}, {t.batch_size // t.micro_batches // (p.mesh['data'] * p.mesh['fsdp'])} sequence(s) per "
            f"device per micro-batch{_context_share(p)}, {m.dtype}",
        ),
        ("gathered weights", p.gathered, "FSDP: one layer all-gathered, forward and backward"),
    ]
    verdict = "fits" if p.total <= p.hbm else "does NOT fit"
    lines = [
        f"{preset} on {p.chips} x {p.device}, mesh "
        f"{mesh}{' + sequence parallel' if cfg.mesh.sequence_parallel else ''}"
        + (f", data over {p.slices} slices" if p.slices > 1 else ""),
        f"batch {t.batch_size} x {p.seq_len} tokens in {t.micro_batches} micro-batch(es)",
        "",
        "per-device memory",
        *(f"  {name:<18}{_size(value):>10}   {note}" for name, value, note in rows),
        f"  {'total':<18}{_size(p.total):>10}   of {p.hbm / GiB:.0f} GiB HBM: {verdict}"
        + ("" if verdict == "fits" or p.remat != "none" else " (try --remat full)"),
        "",
        f"FLOPs per step      {p.flops_per_step:.3e}   (6 x params + attention per token, PaLM App. B; remat "
        "recompute not counted)",
        f"step time           {_seconds(p.step_time)} at {p.mfu:.0%} MFU ({p.peak_flops / 1e12:.0f} TFLOP/s per chip, "
        "bf16 dense data sheet)",
        f"tokens per second   {t.batch_size * p.seq_len / p.step_time:,.0f}",
        "",
        "communication per step, bytes sent by ring collectives (formulas in parallel/planner.py)",
        f"  {'inside a slice':<18}{_size(p.ici_bytes):>10}   per chip: FSDP gathers, gradient reduction, tensor "
        "all-reduces",
        f"{'':<33}at least {_seconds(p.ici_time)} over ICI at {p.ici / 1e9:.0f} GB/s two-way per chip",
    ]
    if p.mesh["context"] > 1:
        how = (
            "keys and values passed around the ring, forward and backward"
            if cfg.mesh.context_impl == "ring"
            else "keys and values gathered forward, their gradients reduce-scattered backward"
        )
        lines.insert(-1, f"  {'of which context':<18}{_size(p.context_bytes):>10}   {how}")
    if p.slices > 1:
        lines += [
            f"  {'between slices':<18}{_size(p.dcn_bytes):>10}   per slice: the gradient all-reduce, 2 (n-1)/n x the "
            f"gradient, n = {p.slices}",
            f"{'':<33}{_seconds(p.dcn_time)} over DCN at {p.chips // p.slices} chips x "
            f"{p.dcn / 1e9:.3g} GB/s ({p.dcn_time / p.step_time:.0%} of the step time)",
        ]
    if xla is not None:
        lines += [
            "",
            f"XLA memory analysis: the train step compiled for {p.chips} simulated CPU devices from abstract shapes, "
            "per device",
            f"  arguments {_size(xla['arguments'])}   temporaries {_size(xla['temp'])}   total {_size(xla['total'])}"
            "   (planner / XLA = "
            f"{p.total / xla['total']:.3f}{'; CPU computes bfloat16 in f32' if m.dtype == 'bfloat16' else ''})",
        ]
    return "\n".join(lines)


def _context_share(p) -> str:
    k = p.mesh["context"]
    return "" if k == 1 else f" (1/{k} of each: context parallelism, {p.seq_len // k} tokens)"


def _size(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def _seconds(t: float) -> str:
    return f"{t:.3f} s" if t >= 1 else f"{t * 1e3:.3g} ms"
