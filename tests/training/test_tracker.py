"""The W&B tracker, offline (WANDB_MODE=offline), its run files read back: what a run logs, that a resumed run
continues its W&B run, and that a failing tracker costs one warning and nothing of the training."""

import dataclasses
import json
import sys

import jax
import numpy as np
import pytest
import wandb

from meshlm.experiments.cli import main
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training import run_dir as run_dir_lib
from meshlm.training import trackers
from meshlm.training.train_config import TrackerConfig
from meshlm.training.trainer import train
from tests.training import wandb_files
from tests.training.helpers import overrides_of, quiet, small_config, text_corpus

WANDB = TrackerConfig(kind="wandb")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """W&B writes its files and nothing else, all under tmp_path, and asks for no account."""
    wandb_files.offline(monkeypatch, tmp_path / "wandb-home")


def _with_tracker(cfg: config_lib.Config, tracker: TrackerConfig) -> config_lib.Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tracker=tracker))


def test_a_run_logs_its_config_metrics_validation_and_samples_and_a_resumed_run_continues_it(corpus, tmp_path):
    run = tmp_path / "run"
    cfg = small_config(corpus, tmp_path, steps=4)
    argv = ["train", "--preset", "tiny", "--run-dir", str(run), "--no-progress", "--tracker", "wandb"]
    assert main(argv + [arg for item in overrides_of(cfg) for arg in ("--set", item)]) == 0
    # Resumed from the saved config alone: the tracker comes with it.
    assert (
        main(["train", "--run-dir", str(run), "--no-progress", "--set", "train.steps=6", "--sample", "the king"]) == 0
    )

    first, resumed, sampled = wandb_files.read_all(run / "wandb")
    run_id = (run / trackers.ID_FILE).read_text().strip()
    assert first.run_id == resumed.run_id == sampled.run_id == run_id
    assert (first.project, first.name, first.job_type) == ("meshlm", "run", "train")
    assert first.config == config_lib.to_dict(_with_tracker(cfg, WANDB))
    assert resumed.config == config_lib.to_dict(config_lib.load(run / "config.json"))
    assert resumed.config["train"]["steps"] == 6

    logged = {step: values for part in (first, resumed) for step, values in part.history.items()}
    records = {r.pop("step"): r for r in metrics_lib.read(run)}
    assert sorted(records) == [2, 4, 6] and logged == records  # every value, bit for bit through JSON
    assert [s for s in sorted(logged) if "val_loss" in logged[s]] == [4, 6]  # evaluations go with the metrics
    assert not (run / "tensorboard").exists()  # W&B instead of TensorBoard, not beside it

    (row,) = sampled.history.values()
    table = next((sampled.folder / "files").glob("media/table/samples_*.table.json"))
    text = (run / "samples.txt").read_text().split("--- sample 0\n", 1)[1].rstrip("\n")
    assert row["samples._type"] == "table-file"
    assert json.loads(table.read_text())["data"] == [["the king", text]]


def test_a_failing_tracker_is_one_warning_and_training_ends_as_without_it(corpus, tmp_path, monkeypatch):
    def lost(*_, **__):
        raise ConnectionError("the W&B server went away")

    monkeypatch.setattr(wandb.Run, "log", lost)
    cfg = small_config(corpus, tmp_path, steps=6)
    lines = []
    tracked = train(_with_tracker(cfg, WANDB), tmp_path / "tracked", progress=False, log=lines.append)
    plain = train(cfg, tmp_path / "plain", progress=False, log=quiet)
    warnings = [line for line in lines if "W&B" in line]  # other warnings (slow data on a busy machine) may come
    assert warnings == ["warning: W&B tracking failed (ConnectionError: the W&B server went away); going on without it"]
    assert tracked.final_step == 6 and [r["step"] for r in metrics_lib.read(tmp_path / "tracked")] == [2, 4, 6]
    for a, b in zip(jax.tree.leaves(tracked.state), jax.tree.leaves(plain.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_tracker_that_cannot_start_warns_once_and_then_does_nothing(tmp_path):
    def refused():
        raise PermissionError("api key rejected")

    lines = []
    tracker = trackers.Tracker(refused, lines.append)
    tracker.log(1, {"loss": 1.0})
    tracker.table("samples", ["prompt", "text"], [["a", "b"]])
    tracker.close()
    assert lines == ["warning: W&B tracking failed (PermissionError: api key rejected); going on without it"]


def test_without_wandb_installed_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'meshlm\[wandb\]'"):
        trackers.open_tracker(WANDB, tmp_path, {}, quiet)
    trackers.open_tracker(TrackerConfig(), tmp_path, {}, quiet).close()  # TensorBoard runs need no wandb


@pytest.mark.parametrize("process, tracker", [(1, WANDB), (0, TrackerConfig())])
def test_only_process_0_of_a_wandb_run_sends_anything(tmp_path, monkeypatch, process, tracker):
    monkeypatch.setattr(jax, "process_index", lambda: process)
    sent = trackers.open_tracker(tracker, tmp_path, {"a": 1}, quiet)
    sent.log(1, {"loss": 1.0})
    sent.close()
    assert not list(tmp_path.iterdir())  # no W&B files, no run id


def test_a_resumed_run_may_change_its_tracker_and_nothing_else(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path)
    config_lib.save(cfg, tmp_path / run_dir_lib.CONFIG)
    assert run_dir_lib.resolve_config(tmp_path, _with_tracker(cfg, WANDB)).train.tracker == WANDB
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1, tracker=WANDB))
    with pytest.raises(ConfigError, match="different config.*sections differing: train"):
        run_dir_lib.resolve_config(tmp_path, other)
