"""A sweep in W&B: its runs log as one group named after the sweep (runner.py sets it), and the fit's values and the
report's plots go to a summary run of their own in that group."""

import dataclasses
import pathlib

from meshlm.experiments.sweep import tune_report
from meshlm.experiments.sweep.fit import FitResult
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.report import PLOTS
from meshlm.experiments.sweep.runner import RUNS
from meshlm.training import config as config_lib
from meshlm.training.run_dir import CONFIG
from meshlm.training.trackers import open_tracker
from meshlm.training.train_config import TrackerConfig


def runs_tracker(sweep_dir: str | pathlib.Path, observations: list[Observation]) -> TrackerConfig | None:
    """The W&B settings the sweep's runs logged with, read from their saved configs; None if none logged there."""
    for o in observations:
        path = pathlib.Path(sweep_dir) / RUNS / o.run_id / CONFIG
        if path.is_file() and (tracker := config_lib.load(path).train.tracker).kind == "wandb":
            return tracker
    return None


def summary(result: FitResult) -> dict[str, float]:
    """fit.json's numbers, flat: fit/NAME and fit/NAME.lo80 ... hi95, holdout/ID/actual, predicted, relative_error."""
    fitted = result.to_json()
    out = {f"fit/{name}": v for name, v in fitted["values"].items()}
    for name, interval in fitted["intervals"].items():
        out.update({f"fit/{name}.{bound}": v for bound, v in interval.items()})
    for h in fitted["holdout"]:
        out.update({f"holdout/{h['run_id']}/{k}": h[k] for k in ("actual", "predicted", "relative_error")})
    return {k: v for k, v in out.items() if v is not None}  # fit.json's nulls (not fitted) are left out


def log_fit(out_dir: pathlib.Path, result: FitResult, tracker: TrackerConfig, settings: dict, plots: bool) -> None:
    """The fit as the summary run `GROUP fit` (a re-fit updates it: its id is kept in out_dir): the values in its
    summary, the report's PNGs as images."""
    named = dataclasses.replace(tracker, name=f"{tracker.group or out_dir.resolve().name} fit")
    run = open_tracker(named, out_dir, settings, log=print, job_type="fit")
    run.summarize(summary(result))
    if plots:
        tuning = [plot for plot in tune_report.PLOTS if (out_dir / f"{plot}.png").is_file()]  # with a tune stage
        run.images({plot: out_dir / f"{plot}.png" for plot in PLOTS + tuple(tuning)})
    run.close()
