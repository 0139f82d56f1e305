"""Learning-rate transfer across width: one LR grid trained at several widths under both parametrizations on the
embedded corpus, then the validation loss of each run and the best LR of each width, on the grid and fitted between
its points (docs/scaling.md, muP).

    python -m meshlm.experiments.studies.lr_transfer --out runs/lr-transfer

Every run is an ordinary trainer run in its own directory under --out (a temporary folder if not given); a finished
run is not trained again, so an interrupted study resumes where it stopped. The first run trains the tokenizer and
every other run reads it. Runs share their compiled programs where only the LR differs (init, evaluation) through
JAX's on-disk cache in --out.
"""

import argparse
import math
import pathlib
import tempfile

from meshlm.experiments.sweep.execute import persistent_compile_cache
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training.tokenizer import find_in
from meshlm.training.trainer import train

WIDTHS = (32, 64, 128)
LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)  # 2x apart
BASE_WIDTH = 64
PARAMETRIZATIONS = ("standard", "mup")
# The tiny preset made cheaper: 2 layers of 2 heads, 512 tokens, 200 steps of 16 x 64 tokens, validation at the end.
# An untied head: tied, these small models sat on the unigram plateau for a varying part of the 200 steps, and the
# final losses moved by more than an LR step does.
SHAPE = [
    "model.n_layers=2",
    "model.n_heads=2",
    "model.tie_embeddings=false",
    "model.vocab_size=512",
    "data.vocab_size=512",
    "train.steps=200",
    "train.batch_size=16",
    "train.seq_len=64",
    "train.optimizer.warmup_steps=20",
    "train.log_every=50",
    "train.eval_every=200",
    "train.eval_batches=16",
    "train.checkpoint_every=200",
    "train.keep_checkpoints=1",
]


def run_overrides(parametrization: str, width: int, lr: float, base_width: int) -> list[str]:
    return [
        f"model.parametrization={parametrization}",
        f"model.mup_base_width={base_width}",
        f"model.d_model={width}",
        f"train.optimizer.peak_lr={lr}",
    ]


def val_loss(run_dir: pathlib.Path) -> float:
    return [m["val_loss"] for m in metrics_lib.read(run_dir) if "val_loss" in m][-1]


def study(out: pathlib.Path, widths, lrs, base_width: int, overrides: list[str]) -> dict:
    """{parametrization: {width: {lr: validation loss}}}."""
    tokenizer: list[str] = []
    losses: dict = {}
    for parametrization in PARAMETRIZATIONS:
        for width in widths:
            for lr in lrs:
                sets = SHAPE + overrides + tokenizer + run_overrides(parametrization, width, lr, base_width)
                run_dir = out / f"{parametrization}-d{width}-lr{lr:g}"
                with persistent_compile_cache(str(out / "jax-cache")):
                    train(config_lib.from_preset("tiny", sets).validate(), run_dir, progress=False, log=lambda *_: None)
                tokenizer = tokenizer or [f"data.tokenizer={find_in(run_dir)}"]
                loss = losses.setdefault(parametrization, {}).setdefault(width, {})[lr] = val_loss(run_dir)
                print(f"{parametrization:8s} d_model={width:<4d} lr={lr:<7g} val loss {loss:.4f}", flush=True)
    return losses


def fitted_best(by_lr: dict[float, float]) -> float | None:
    """The minimum of the parabola in log LR through the best LR and its two neighbours (the grid is even in log LR):
    where between grid points the optimum lies. None when the best LR is at an edge of the grid."""
    lrs = sorted(by_lr)
    i = min(range(len(lrs)), key=lambda j: by_lr[lrs[j]])
    if i in (0, len(lrs) - 1):
        return None
    lo, mid, hi = (by_lr[lrs[j]] for j in (i - 1, i, i + 1))
    return lrs[i] * math.exp(-0.5 * math.log(lrs[i + 1] / lrs[i]) * (hi - lo) / (hi - 2 * mid + lo))


def table(losses: dict, lrs) -> str:
    lines = ["| parametrization | d_model | " + " | ".join(f"{lr:g}" for lr in lrs) + " | best LR | fitted |"]
    lines.append("|---|---|" + "---|" * len(lrs) + "---|---|")
    for parametrization, by_width in losses.items():
        for width, by_lr in by_width.items():
            best, fitted = min(by_lr, key=by_lr.get), fitted_best(by_lr)
            cells = " | ".join(f"**{by_lr[lr]:.3f}**" if lr == best else f"{by_lr[lr]:.3f}" for lr in lrs)
            fitted_cell = "edge" if fitted is None else f"{fitted:.2g}"
            lines.append(f"| {parametrization} | {width} | {cells} | {best:g} | {fitted_cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path, help="folder of the runs (default: a temporary folder)")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="d_model values (default 32,64,128)")
    p.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in LRS), help="peak LRs (default 1e-3 ... 3.2e-2)")
    p.add_argument("--base-width", type=int, default=BASE_WIDTH, help="muP's model.mup_base_width (default 64)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = p.parse_args(argv)
    widths, lrs = [int(w) for w in args.widths.split(",")], [float(x) for x in args.lrs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        losses = study(args.out or pathlib.Path(tmp), widths, lrs, args.base_width, args.set)
    print(table(losses, lrs))


if __name__ == "__main__":
    main()
