"""`meshlm coord-check`: muP's coordinate check, activation RMS against width over a few training steps."""

import argparse
import json

from meshlm.experiments.commands import _flags
from meshlm.experiments.studies import coord_check

DESCRIPTION = (
    "Train a preset for a few steps at each of several widths (model.d_model) and print, per width and step, the RMS "
    "of the embedding output, each layer's attention logits and block output, and the output logits. Under "
    "model.parametrization=mup they keep their scale across widths; under standard they grow. Constant LR (the "
    "preset's peak, train.optimizer.peak_lr) from the first step, uniformly random tokens drawn from train.seed; under "
    "muP model.mup_base_width defaults to the preset's d_model."
)


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if len(widths) < 2 or min(widths) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more positive widths, e.g. 64,128,256,512")
    return widths


def add_arguments(p) -> None:
    _flags.add_config_args(p)
    p.add_argument(
        "--widths", type=_widths, default=[64, 128, 256, 512], metavar="W,W,...", help="default 64,128,256,512"
    )
    p.add_argument("--steps", type=_flags.at_least(1), default=10, metavar="N", help="training steps (default 10)")
    _flags.add_json(p)


def run(args) -> None:
    cfg = coord_check.check_config(args.preset, args.steps, args.set)
    result = coord_check.coord_check(cfg, args.widths)
    print(json.dumps(result) if args.json else coord_check.text(result))
