"""Metrics to metrics.jsonl (one JSON object per line) and TensorBoard events; only process 0 writes."""

import json
import pathlib

import jax


class MetricsWriter:
    def __init__(self, run_dir: pathlib.Path, resume_step: int):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self.path = run_dir / "metrics.jsonl"
        self._drop_after(resume_step)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        self.file = self.path.open("a")

    def _drop_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: forget what the killed run logged for them."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for name, value in metrics.items():
            self.tb.add_scalar(name, float(value), step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read(run_dir: pathlib.Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
