"""A sweep in W&B, offline: its runs grouped under the sweep's name with their ids unchanged, and the fit's values
and report plots in a summary run."""

import dataclasses
import json

import numpy as np
import pytest

from meshlm.experiments import cli
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import runner, tracking
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.report import PLOTS
from meshlm.training import config as config_lib
from meshlm.training.train_config import TrackerConfig
from tests.experiments.sweep.helpers import FakeLauncher, text_corpus, write_spec
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep
from tests.training import wandb_files


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    wandb_files.offline(monkeypatch, tmp_path / "wandb-home")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def test_a_sweep_with_a_tracker_groups_its_runs_under_its_name_and_keeps_their_ids(tmp_path, corpus):
    spec = spec_lib.load(write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", seeds=[0, 1]))
    launcher = FakeLauncher()
    wandb = TrackerConfig(kind="wandb", project="scaling")
    runner.run_sweep(spec, tmp_path / "out", launcher, progress=False, log=lambda *_: None, tracker=wandb)
    assert [j.run_id for j in launcher.jobs] == [r.run_id for r in plan_lib.resolve(spec)]
    for job in launcher.jobs:
        assert config_lib.from_dict(job.config).train.tracker == TrackerConfig("wandb", "scaling", group="test")


def test_the_fit_follows_the_runs_to_wandb_unless_none_of_them_went(tmp_path):
    runs = tmp_path / runner.RUNS
    grouped = TrackerConfig(kind="wandb", group="test")
    for run_id, tracker in (("a", TrackerConfig()), ("b", grouped)):
        cfg = config_lib.Config()
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tracker=tracker))
        config_lib.save(cfg, runs / run_id / "config.json")
    seen = [Observation(N=1.0, D=1.0, loss=1.0, run_id=i) for i in ("a", "b")]
    assert tracking.runs_tracker(tmp_path, seen) == grouped
    assert tracking.runs_tracker(tmp_path, seen[:1]) is None


def test_fit_logs_its_values_and_report_plots_to_a_summary_run(tmp_path):
    obs = isoflop_sweep(HOFFMANN, np.logspace(18, 21, 4), sizes_per_budget=5, noise=0.003)
    table = tmp_path / "points.csv"
    table.write_text("N,D,loss\n" + "".join(f"{o.N!r},{o.D!r},{o.loss!r}\n" for o in obs))
    argv = ["sweep", "fit", "--table", str(table), "--resamples", "4", "--starts", "4", "--tracker", "wandb"]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0  # a re-fit updates the same summary run

    first, again = wandb_files.read_all(tmp_path / "wandb")
    assert first.run_id == again.run_id and (first.name, first.job_type) == (f"{tmp_path.name} fit", "fit")
    assert first.config == {"resamples": 4, "seed": 0, "starts": 4}
    fitted = json.loads((tmp_path / "fit.json").read_text())
    for name, value in fitted["values"].items():
        assert first.summary.get(f"fit/{name}") == value
    assert first.summary["fit/alpha.lo80"] == fitted["intervals"]["alpha"]["lo80"]
    images = (first.folder / "files" / "media" / "images").glob("*.png")
    assert sorted(p.name.rsplit("_", 2)[0] for p in images) == sorted(PLOTS)  # W&B names them KEY_STEP_HASH.png
