"""The attention study: every registered attention layer, and every kernel written for this platform, trained from
one preset to the same token budget on the embedded corpus with several seeds; one table of validation loss (mean
and spread over the seeds), training tokens/s, KV-cache bytes per token and the train step's compiled memory.

    python -m meshlm.experiments.studies.attention --out runs/attention-study   # the table in docs/attention.md
    python -m meshlm.experiments.studies.attention --steps 20 --seeds 1         # a smoke run

Each run trains in its own directory under --out (a temporary folder if not given); a finished run is not trained
again, so an interrupted study resumes where it stopped. A layer or kernel you register enters the study as it is.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import tempfile

import jax

from meshlm.model import attention
from meshlm.model.attention import KVCache
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training.atomic import write_atomic
from meshlm.training.trainer import train

BASELINE = "layer=mha"


def variants(cfg: config_lib.Config) -> dict[str, list[str]]:
    """Row name -> overrides. Layers run on the preset's kernel, with options that make them differ at the study's
    shapes (windows and bands a quarter of the sequence, half the key/value heads); kernels run under `mha`."""
    window = f"model.attention_window={max(1, cfg.seq_len // 4)}"
    options = {
        "gqa": [f"model.n_kv_heads={max(1, cfg.model.n_heads // 2)}"],
        "sliding_window": [window],
        "gpt3_sparse": ["model.attention_pattern=dense,local", window],
    }
    rows = {f"layer={name}": [f"model.attention_layer={name}", *options.get(name, [])] for name in layer_names()}
    preset_kernel = attention.kernel(cfg.model.attention)
    for name in native_kernels():
        if attention.kernel(name) is not preset_kernel:
            rows[f"kernel={name}"] = ["model.attention_layer=mha", f"model.attention={name}"]
    return rows


def layer_names() -> list[str]:
    return ["mha"] + [n for n in attention.layer_names() if n != "mha"]


def native_kernels() -> list[str]:
    """The registered kernels written for this platform (Pallas kernels for TPU or GPU are only emulated on CPU)."""
    return [name for name in attention.kernel_names() if attention.is_native(name, jax.default_backend())]


def cache_bytes_per_token(cfg: config_lib.Config) -> float:
    """KV-cache bytes for a full training-length context over its length, all layers, at the compute dtype: a
    ring buffer's is smaller than its bytes per slot (shapes only: nothing allocated)."""
    cache = jax.eval_shape(lambda: KVCache.empty(cfg.model, 1, cfg.seq_len))
    return sum(x.size * x.dtype.itemsize for x in cache.layers.values()) / cfg.seq_len


def run_seed(cfg: config_lib.Config, run_dir: pathlib.Path) -> dict:
    train(cfg, run_dir, progress=False, log=lambda *_: None)
    logged = metrics_lib.read(run_dir)
    val = [m["val_loss"] for m in logged if "val_loss" in m]
    speeds = [m["tokens_per_s"] for m in logged if "tokens_per_s" in m]
    memory = [m["memory_peak_bytes"] for m in logged if "memory_peak_bytes" in m]
    return dict(
        val_loss=val[-1] if val else float("nan"),
        tokens_per_s=statistics.median(speeds) if speeds else float("nan"),
        memory_bytes=memory[0] if memory else float("nan"),
    )


def summarise(name: str, cfg: config_lib.Config, seeds: list[dict]) -> dict:
    losses = [s["val_loss"] for s in seeds]
    return dict(
        variant=name,
        val_losses=losses,
        val_loss=statistics.fmean(losses),
        spread=(max(losses) - min(losses)) / 2,
        tokens_per_s=statistics.median(s["tokens_per_s"] for s in seeds),
        cache_bytes_per_token=cache_bytes_per_token(cfg),
        memory_bytes=seeds[0]["memory_bytes"],
        tokens=cfg.train.steps * cfg.train.batch_size * cfg.seq_len,
    )


def separated(row: dict, baseline: dict) -> bool:
    """Whether the row's losses over seeds lie wholly above or below the baseline's: the difference exceeds both
    spreads (with one seed, any difference counts)."""
    return max(row["val_losses"]) < min(baseline["val_losses"]) or min(row["val_losses"]) > max(baseline["val_losses"])


def study(
    preset: str, steps: int | None, seeds: int, out: pathlib.Path, overrides: list[str], only: list[str] = ()
) -> list[dict]:
    base = config_lib.from_preset(preset, overrides)
    if steps is not None:
        every = max(1, steps // 4)
        train_cfg = dataclasses.replace(
            base.train, steps=steps, log_every=every, eval_every=every, checkpoint_every=steps
        )
        base = dataclasses.replace(base, train=train_cfg)
    table = variants(base)
    if unknown := [name for name in only if name not in table]:
        raise ConfigError(f"--only {', '.join(unknown)}: no such row; the rows here are {', '.join(table)}")
    rows = []
    for name, variant_overrides in table.items():
        if only and name not in only and name != BASELINE:
            continue
        cfg = config_lib.apply_overrides(base, variant_overrides).validate()
        runs = []
        for seed in range(seeds):
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
            runs.append(run_seed(seeded, out / name.replace("=", "-") / f"seed{seed}"))
        rows.append(summarise(name, cfg, runs))
        print(format_row(rows[-1], rows[0]), flush=True)
    return rows


def format_row(r: dict, baseline: dict) -> str:
    delta = r["val_loss"] - baseline["val_loss"]
    vs = "" if r is baseline else f"{delta:+.4f}{' *' if separated(r, baseline) else ''}"
    return (
        f"| {r['variant']:<22} | {r['val_loss']:.4f} ± {r['spread']:.4f} | {vs:>10} | {r['tokens_per_s']:8,.0f} | "
        f"{r['cache_bytes_per_token']:7,.0f} | {r['memory_bytes'] / 2**20:8.1f} |"
    )


HEADER = (
    "| variant                | val loss ± spread | vs mha     | tokens/s | cache B/token | step MiB |\n"
    "|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="the preset every variant trains (default tiny)")
    p.add_argument("--steps", type=int, help="training steps per run (default: the preset's)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per variant (default 2)")
    p.add_argument("--out", type=pathlib.Path, help="folder of the runs and study.json (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--only", action="append", default=[], metavar="ROW", help="train only this row (repeatable)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or pathlib.Path(tmp)
        print(f"attention study: preset {args.preset}, {args.seeds} seeds, runs in {out}\n{HEADER}", flush=True)
        rows = study(args.preset, args.steps, args.seeds, out, args.set, args.only)
        write_atomic(out / "study.json", json.dumps(rows, indent=1))
    print(
        f"equal budget: {rows[0]['tokens']:,} training tokens per run; ± is half the range over seeds; * marks a "
        f"difference from {rows[0]['variant']} larger than both spreads (the seeds' losses do not overlap)"
    )


if __name__ == "__main__":
    main()
