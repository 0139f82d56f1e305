"""Argument types and flags that several commands share."""

import argparse
import math
import typing

from meshlm.training.train_config import TrackerConfig


def at_least(low: int):
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {low} or more")
        return value

    return parse


def number(low: float, high: float | None, low_open: bool = False):
    """An argparse type: a finite float in [low, high] ((low, high] with low_open; no upper bound if high is None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and (high is None or value <= high)):
            span = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a number in {span}")
        return value

    return parse


def add_set(p: argparse.ArgumentParser, help: str = "override one config field (repeatable)") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=help)


def add_config_args(p: argparse.ArgumentParser, preset_required: bool = True) -> None:
    p.add_argument(
        "--preset", required=preset_required, metavar="NAME", help="model preset (meshlm info --list shows them)"
    )
    add_set(p)


def add_tracker(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--tracker", choices=typing.get_args(typing.get_type_hints(TrackerConfig)["kind"]), help=help)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
