"""Where a run's wall time went, kept in RUN_DIR/goodput.json and summed over every start of the run.

The time is split into productive training (step time) and badput by cause:

    compile             the first call of each length: tracing and compiling, plus that call's own steps
    data_wait           the host waiting for the loader's next batch
    checkpoint_save     starting each asynchronous save, and waiting for the last to finish
    checkpoint_restore  reading the checkpoint a restarted run resumes from
    evaluation          the hooks: validation, few-shot evaluation, profiling
    startup             config, tokenizer, data pipeline and state up to the first step, restore excluded
    recomputed          steps trained again after a restart: the work done since the checkpoint it resumed from

Time after a run's last record before it was killed is not seen by anyone, so it is in no total (at most one
`train.log_every` interval per kill)."""

import contextlib
import dataclasses
import json
import time

from etils import epath

from meshlm.training.atomic import write_atomic

FILE = "goodput.json"
CAUSES = (
    "compile",
    "data_wait",
    "checkpoint_save",
    "checkpoint_restore",
    "evaluation",
    "startup",
    "recomputed",
)
DATA_WAIT_WARNING = 0.05  # of step time
DATA_WAIT_FLOOR_S = 1.0  # below it a short run's millisecond steps would make any wait look large
KEPT_MARKS = 32  # checkpoints a restart may fall back to; older ones have long been deleted


@dataclasses.dataclass
class Goodput:
    """This start's time, on top of what earlier starts of the run recorded."""

    path: epath.Path | None  # None: another process than 0, which keeps no file
    earlier: dict[str, float]  # seconds by cause, and "productive", from earlier starts
    marks: dict[int, float]  # checkpoint step -> productive seconds up to it (over all starts)
    began: float = dataclasses.field(default_factory=lambda: time.perf_counter())
    session: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(CAUSES, 0.0))
    loop_began: float | None = None
    first_batch_wait: float = 0.0  # the loader's start, not a wait the warning is about
    step: int = 0
    warned_data_wait: bool = False

    @classmethod
    def open(cls, run_dir: epath.Path, writes: bool) -> "Goodput":
        path = run_dir / FILE
        saved = json.loads(path.read_text()) if path.exists() else {}
        earlier = {k: float(saved.get("seconds", {}).get(k, 0.0)) for k in ("productive", *CAUSES)}
        marks = {int(k): float(v) for k, v in saved.get("checkpoint_marks", {}).items()}
        return cls(path if writes else None, earlier, marks or {0: 0.0}, step=int(saved.get("step", 0)))

    @contextlib.contextmanager
    def timed(self, cause: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.session[cause] += time.perf_counter() - started

    def add(self, cause: str, seconds: float) -> None:
        self.session[cause] += seconds

    def resumed_at(self, step: int) -> None:
        """The run restarts from its checkpoint at `step`: what earlier starts trained after it was lost."""
        if self.step <= step:
            return
        # The nearest mark at or before it: marks are pruned, and a damaged checkpoint makes a run resume earlier.
        at_checkpoint = self.marks.get(max((s for s in self.marks if s <= step), default=-1), 0.0)
        self.earlier["recomputed"] += self.earlier["productive"] - at_checkpoint
        self.earlier["productive"] = at_checkpoint
        self.marks = {s: t for s, t in self.marks.items() if s <= step}

    def loader_started(self) -> None:
        """Call after the first batch of this start."""
        self.first_batch_wait = self.session["data_wait"]

    def loop_started(self, step: int) -> None:
        if self.loop_began is not None:  # a second `Trainer.run` of the same start
            return
        self.loop_began, self.step = time.perf_counter(), step
        self.session["startup"] = self.loop_began - self.began - self.session["checkpoint_restore"]

    def seconds(self) -> dict[str, float]:
        """Productive time and badput by cause, over every start so far."""
        in_loop = 0.0 if self.loop_began is None else time.perf_counter() - self.loop_began
        loop_badput = sum(v for k, v in self.session.items() if k not in ("startup", "checkpoint_restore"))
        out = {k: self.earlier[k] + self.session[k] for k in CAUSES}
        out["productive"] = self.earlier["productive"] + in_loop - loop_badput
        return out

    def data_wait_warning(self) -> str | None:
        """A warning, the first time the host has waited on data (after the loader's start) for more than 5 % of
        this start's step time, and at least a second in all."""
        productive = self.seconds()["productive"] - self.earlier["productive"]
        waited = self.session["data_wait"] - self.first_batch_wait
        too_little = waited < DATA_WAIT_FLOOR_S or waited <= DATA_WAIT_WARNING * productive
        if self.warned_data_wait or productive <= 0 or too_little:
            return None
        self.warned_data_wait = True
        return (
            f"warning: waiting for data took {waited:.1f} s, {waited / productive:.0%} of step time so far (over "
            f"{DATA_WAIT_WARNING:.0%}): the input pipeline holds training back (docs/performance.md, Goodput)"
        )

    def record(self, step: int, checkpoint: bool) -> None:
        """Write goodput.json as of step `step`; `checkpoint`: a checkpoint of that step was started."""
        self.step = step
        seconds = self.seconds()
        if checkpoint:
            self.marks[step] = seconds["productive"]
            self.marks = dict(sorted(self.marks.items())[-KEPT_MARKS:])
        if self.path is None:
            return
        total = sum(seconds.values())
        summary = {
            "step": step,
            "total_seconds": total,
            "goodput": seconds["productive"] / total if total else 0.0,
            "seconds": seconds,
            "checkpoint_marks": {str(s): t for s, t in sorted(self.marks.items())},
        }
        write_atomic(self.path, json.dumps(summary, indent=1) + "\n")


def read(run_dir: epath.PathLike) -> dict | None:
    path = epath.Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.exists() else None
