"""A run's records sent to Weights & Biases (train.tracker.kind=wandb, the extra `wandb`) besides metrics.jsonl;
TensorBoard, the default tracker, is metrics.py's. Only process 0 sends.

A tracker is a convenience, never a reason to lose training: its first failure (a lost connection, a full disk, a
rejected key) is one warning in the run's log, and it sends nothing more while training goes on."""

import os
import uuid
from collections.abc import Callable
from typing import Any

import jax
from etils import epath

from meshlm.model.errors import ConfigError
from meshlm.training.atomic import write_atomic
from meshlm.training.train_config import TrackerConfig

ID_FILE = "wandb-run-id"
INSTALL = "pip install 'meshlm[wandb]'"


def _check(tracker: TrackerConfig) -> None:
    """A missing package is an error, not a warning: the run was asked to log somewhere it never could."""
    if tracker.kind != "wandb":
        return
    try:
        import wandb  # noqa: F401  deferred: slow to import, and only a W&B run needs it
    except ImportError:
        raise ConfigError(
            f"train.tracker.kind=wandb needs the wandb package, which is not installed; {INSTALL}"
        ) from None


class _WandbRun:
    """The W&B run named in `directory`, started there the first time and resumed after."""

    def __init__(self, tracker: TrackerConfig, directory: epath.Path, config: dict, job_type: str):
        import wandb  # deferred: slow to import, and only a W&B run needs it

        self.wandb = wandb
        id_path = directory / ID_FILE
        if id_path.exists():
            run_id = id_path.read_text().strip()
        else:  # saved before the run starts, so a run killed at any point resumes into the same W&B run
            run_id = uuid.uuid4().hex[:12]
            write_atomic(id_path, run_id + "\n")
        self.run = wandb.init(
            project=tracker.project or os.environ.get("WANDB_PROJECT", "meshlm"),
            entity=tracker.entity or None,
            group=tracker.group or None,
            name=tracker.name or directory.name,
            job_type=job_type,
            id=run_id,
            resume="allow",
            config=config,
            dir=None if "://" in str(directory) else str(directory),  # W&B writes its local files to disks only
            reinit="create_new",  # a sweep trains many runs in one process, each its own W&B run
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=columns, data=rows)})

    def images(self, paths: dict[str, epath.PathLike]) -> None:
        self.run.log({name: self.wandb.Image(str(path)) for name, path in paths.items()})

    def summarize(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """Sends to a W&B run, or nowhere. The first exception any call raises is one warning through `log`; every call
    after it does nothing."""

    def __init__(self, start: Callable[[], _WandbRun] | None, log: Callable[[str], None]):
        self._log, self._run = log, None
        if start is not None:
            try:
                self._run = start()
            except Exception as e:  # see the module's docstring
                self._fail(e)

    def _fail(self, error: Exception) -> None:
        self._run = None
        self._log(f"warning: W&B tracking failed ({type(error).__name__}: {error}); going on without it")

    def _send(self, call: Callable[[_WandbRun], None]) -> None:
        if self._run is None:
            return
        try:
            call(self._run)
        except Exception as e:  # see the module's docstring
            self._fail(e)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._send(lambda run: run.log(step, values))

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._send(lambda run: run.table(name, columns, rows))

    def images(self, paths: dict[str, epath.PathLike]) -> None:
        self._send(lambda run: run.images(paths))

    def summarize(self, values: dict[str, Any]) -> None:
        self._send(lambda run: run.summarize(values))

    def close(self) -> None:
        self._send(lambda run: run.close())
        self._run = None


def open_tracker(
    tracker: TrackerConfig, directory: epath.PathLike, config: dict, log: Callable[[str], None], job_type: str = "train"
) -> Tracker:
    """The tracker of the run in `directory` (which keeps its W&B run id), with `config` as the run's config."""
    _check(tracker)
    if tracker.kind != "wandb" or jax.process_index() != 0:
        return Tracker(None, log)
    return Tracker(lambda: _WandbRun(tracker, epath.Path(directory), config, job_type), log)
