"""Matplotlib for the sweep's reports: loaded only when a report draws, written whole or not at all."""

import io
from pathlib import Path

from meshlm.training.atomic import write_atomic


def pyplot():
    import matplotlib  # deferred: heavy, and only the report draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())
