"""The GPU check (`make bench-gpu`): on one NVIDIA GPU, run the GPU tests, then measure GPT-3 XL bf16 training MFU,
decode and few-shot scoring throughput, and print one table. Budget: under 8 minutes on one H100.

    python -m meshlm.experiments.bench.gpu_check [--quick]
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import time
import traceback

import jax

from meshlm.experiments.bench import decode as bench_decode
from meshlm.experiments.bench import eval as bench_eval
from meshlm.experiments.bench import train as bench_train
from meshlm.training import config as config_lib

# GPT-3 XL in bf16 (f32 master weights), cuDNN flash attention, the remat policy usual for 1-10B models.
XL = [
    "model.dtype=bfloat16",
    "model.attention=fused",
    "model.remat=dots_with_no_batch_dims_saveable",
    "model.scan_layers=false",  # +5% MFU on an H100: no stacked residual buffers to zero-fill and copy
    "train.batch_size=16",  # 56 GiB at peak on an H100 (docs/performance.md)
]
MFU_GOAL = 0.5


def run_tests() -> tuple[str, str]:
    """The gpu-marked tests in a child pytest (JAX on the GPU there too): (outcome line, ok/FAIL)."""
    env = dict(os.environ, JAX_PLATFORMS="cuda")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu"], env=env, capture_output=True, text=True
    )
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n", flush=True)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return last, "ok" if proc.returncode == 0 else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlm.experiments.bench.gpu_check", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and tokens (a smoke run, ~3 minutes)")
    parser.add_argument("--skip-tests", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    if device.platform != "gpu":
        print(
            f"gpu_check: JAX sees no GPU (first device: {device.device_kind}); install jax[cuda12] (make bench-gpu "
            "does) on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    rows: list[tuple[str, str, str, str]] = []  # (what, result, goal, status)
    if not args.skip_tests:
        line, status = run_tests()
        rows.append(("GPU tests (bf16 parity, cuDNN attention)", line, "all pass", status))

    cfg = config_lib.from_preset("gpt3-xl", XL).validate()
    # Each measurement reports its own failure as a row, so one broken part still leaves the others' figures.
    for measure in (measure_train, measure_decode, measure_scoring):
        try:
            rows += measure(cfg, args.quick)
        except Exception as error:  # noqa: BLE001 - reported in the table and the exit status
            traceback.print_exc()
            rows.append((measure.__name__, f"{type(error).__name__}: {str(error)[:200]}", "", "ERROR"))
        print(f"[{time.perf_counter() - start:.0f} s]", rows[-1], flush=True)
    rows.append(("total", f"{time.perf_counter() - start:.0f} s on {device.device_kind}", "< 480 s", ""))
    print(table(rows))
    return 0 if all(status in ("ok", "") for *_, status in rows) else 1


def measure_train(cfg, quick: bool) -> list[tuple[str, str, str, str]]:
    steps, warmup = (3, 1) if quick else (10, 2)
    t = bench_train.bench_train(cfg, steps=steps, warmup=warmup, against=[])
    return [
        (
            "train GPT-3 XL bf16, batch 16 x 2048",
            f"MFU {t['mfu']:.3f}, {t['tokens_per_s']:,.0f} tokens/s, step {t['step_s'] * 1e3:.0f} ms, "
            f"compile {t['compile_s']:.0f} s",
            f">= {MFU_GOAL}",
            "ok" if t["mfu"] >= MFU_GOAL else "below",
        )
    ]


def measure_decode(cfg, quick: bool) -> list[tuple[str, str, str, str]]:
    new = 128 if quick else 512
    d = bench_decode.bench_decode(
        cfg, batches=[1, 16], prompt_len=128, new_tokens=new, uncached_tokens=2, repeats=2 if quick else 3
    )
    return [
        (
            f"decode GPT-3 XL bf16, batch {r['batch']}, 128 + {new}",
            f"{r['cached_tokens_per_s']:,.0f} tokens/s, {r['bytes_per_s'] / 1e9:,.0f} GB/s = "
            f"{r['bandwidth_fraction']:.2f} of read bandwidth ({r['memory_bytes_per_s'] / 1e9:,.0f} GB/s); "
            f"{r['speedup']:.0f}x recompute, same tokens: {r['same_tokens']}",
            "",
            "",
        )
        for r in d["rows"]
    ]


def measure_scoring(cfg, quick: bool) -> list[tuple[str, str, str, str]]:
    # Scanned layers here: each length bucket used (up to 15 at n_ctx 2048) is a compile, and unrolled ones take
    # about twice as long.
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, scan_layers=True))
    e = bench_eval.bench_eval(
        cfg, items=4 if quick else 16, shots=bench_eval.SHOTS, batch_size=16, repeats=2 if quick else 3
    )
    return [
        (
            f"scoring GPT-3 XL bf16, {e['requests']} requests, K=0..16",
            f"{e['tokens_per_s']:,.0f} scored tokens/s packed ({e['rows']['tokens_per_s']:,.0f} one request per "
            f"row), {e['compiled_shapes']} compiled shapes for {e['distinct_lengths']} lengths",
            f"one per (length, slots) bucket used ({e['call_shapes']})",
            "ok" if e["compiled_shapes"] <= e["call_shapes"] else "more",
        )
    ]


def table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("check", "result", "goal", "status")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
