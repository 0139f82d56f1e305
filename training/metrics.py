"""Metrics to metrics.jsonl (one JSON object per line) and TensorBoard events (the default tracker; the other one,
W&B, is trackers.py's); only process 0 writes.

metrics.jsonl is the one file a run appends to rather than replaces (rewriting it whole at every log step would
cost O(steps^2) writes): a kill can at worst cut its last line short, and both the reader and a resumed run drop
such a line. On object stores, which cannot append, it is rewritten whole (atomically) instead."""

import json
import sys

import jax
from etils import epath

from meshlm.training.atomic import write_atomic

# Fields that depend on the start of a run, not on its steps: wall-clock figures, and the memory check each start
# makes at its first record. A resumed run's records equal an uninterrupted run's in every other field.
PER_START = ("step_time", "tokens_per_s", "mfu", "memory_peak_bytes", "memory_planned_bytes")


class MetricsWriter:
    def __init__(self, run_dir: epath.PathLike, resume_step: int, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        run_dir = epath.Path(run_dir)
        self.path = run_dir / "metrics.jsonl"
        self.lines = self._kept_until(resume_step)
        # Object stores (gs://, s3://) cannot append: there the file is rewritten whole, which is atomic.
        self.appendable = _is_local(self.path)
        self._rewrite()
        self.file = self.path.open("a") if self.appendable else None
        self.tb = None
        if tensorboard:
            purge_step = resume_step + 1 if resume_step else None
            self.tb = _summary_writer()(str(run_dir / "tensorboard"), purge_step=purge_step)

    def _kept_until(self, step: int) -> list[str]:
        """A resumed run repeats the steps after its checkpoint: forget what the killed run logged for them."""
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        return [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]

    def _rewrite(self) -> None:
        write_atomic(self.path, "".join(line + "\n" for line in self.lines))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}})
        self.lines.append(line)
        if self.appendable:
            self.file.write(line + "\n")
            self.file.flush()
        else:
            self._rewrite()
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(name, float(value), step)

    def close(self) -> None:
        if self.enabled:
            if self.file is not None:
                self.file.close()
            if self.tb is not None:
                self.tb.close()


def _is_local(path: epath.Path) -> bool:
    return "://" not in str(path)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read(run_dir: epath.PathLike) -> list[dict]:
    """The logged records; a line cut short by a killed run (the only kind of damage appending can do) is skipped."""
    path = epath.Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if _step_of(line) is not None]


def _summary_writer():
    """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch whenever it is installed,
    only to accept torch tensors, which meshlm never logs, and that import is 1-3 s of every run's start-up."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter
