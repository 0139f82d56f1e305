"""The attention study: one small preset trained with each attention variant at an equal token budget on the
embedded corpus, then one table of validation loss, training tokens/s and KV-cache bytes per token.

    python -m meshlm.experiments.studies.attention                    # tiny preset, 300 steps per variant
    python -m meshlm.experiments.studies.attention --steps 20 --out runs/study-smoke

Each variant trains in its own run directory under --out (a temporary folder if not given); a finished run is
not trained again, so an interrupted study resumes where it stopped.
"""

import argparse
import dataclasses
import pathlib
import tempfile

import jax

from meshlm.model.attention import KVCache
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training.trainer import train

# name: overrides of the preset. Windows and bands are a quarter of the training sequence (set in `variants`).
VARIANTS = {
    "reference": [],
    "gpt3_sparse": ["model.attention_layer=gpt3_sparse", "model.attention_pattern=dense,local"],
    "sliding_window": ["model.attention_layer=sliding_window"],
    "grouped_query": ["model.attention_layer=gqa"],
    "mla": ["model.attention_layer=mla"],
    "linear": ["model.attention=linear"],
}


def variants(cfg: config_lib.Config) -> dict[str, list[str]]:
    window = f"model.attention_window={max(1, cfg.seq_len // 4)}"
    kv_heads = f"model.n_kv_heads={max(1, cfg.model.n_heads // 2)}"
    extra = {"gpt3_sparse": [window], "sliding_window": [window], "grouped_query": [kv_heads]}
    return {name: overrides + extra.get(name, []) for name, overrides in VARIANTS.items()}


def cache_bytes_per_token(cfg: config_lib.Config) -> float:
    """KV-cache bytes for a full training-length context over its length, all layers, at the compute dtype: a
    ring buffer's is smaller than its bytes per slot (shapes only: nothing allocated)."""
    cache = jax.eval_shape(lambda: KVCache.empty(cfg.model, 1, cfg.seq_len))
    return sum(x.size * x.dtype.itemsize for x in cache.layers.values()) / cfg.seq_len


def run_variant(name: str, cfg: config_lib.Config, run_dir: pathlib.Path) -> dict:
    train(cfg, run_dir, progress=False, log=lambda *_: None)
    logged = metrics_lib.read(run_dir)
    val = [m["val_loss"] for m in logged if "val_loss" in m]
    speeds = [m["tokens_per_s"] for m in logged if "tokens_per_s" in m]
    return dict(
        variant=name,
        val_loss=val[-1] if val else float("nan"),
        tokens_per_s=sorted(speeds)[len(speeds) // 2] if speeds else float("nan"),
        cache_bytes_per_token=cache_bytes_per_token(cfg),
        tokens=cfg.train.steps * cfg.train.batch_size * cfg.seq_len,
    )


def study(preset: str, steps: int | None, out: pathlib.Path, overrides: list[str]) -> list[dict]:
    base = config_lib.from_preset(preset, overrides)
    if steps is not None:
        t = base.train
        every = max(1, steps // 4)
        train_cfg = dataclasses.replace(t, steps=steps, log_every=every, eval_every=every, checkpoint_every=steps)
        base = dataclasses.replace(base, train=train_cfg)
    rows = []
    for name, variant_overrides in variants(base).items():
        cfg = config_lib.apply_overrides(base, variant_overrides).validate()
        rows.append(run_variant(name, cfg, out / name))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: dict) -> str:
    cache = f"{r['cache_bytes_per_token']:,.0f}"
    return f"| {r['variant']:<15} | {r['val_loss']:8.4f} | {r['tokens_per_s']:10.0f} | {cache:>13} |"


HEADER = "| variant         | val loss | tokens/s   | cache B/token |\n|---|---|---|---|"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="the preset every variant trains (default tiny)")
    p.add_argument("--steps", type=int, help="training steps per variant (default: the preset's)")
    p.add_argument("--out", type=pathlib.Path, help="folder of the runs (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or pathlib.Path(tmp)
        print(f"attention study: preset {args.preset}, runs in {out}\n{HEADER}", flush=True)
        rows = study(args.preset, args.steps, out, args.set)
    print(f"equal budget: {rows[0]['tokens']:,} training tokens per variant")


if __name__ == "__main__":
    main()
