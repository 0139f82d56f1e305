"""The sweep driver: skip finished runs, leave other runners' runs alone, record failures, dry-run the plan; and
end to end, a sweep killed with SIGKILL and re-run completes only what was missing and ends bit for bit as a sweep
never killed. Retries: test_retries.py."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import launchers, runner
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.store import Owner, Store
from meshlm.training import faults
from tests.experiments.sweep.helpers import FakeLauncher, text_corpus, write_spec


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def _spec(tmp_path, corpus, **fields):
    fields = {"shapes": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}], "seeds": [0, 1], **fields}
    return spec_lib.load(write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", **fields))


def test_rerun_skips_finished_and_failed_runs_and_retry_failed_runs_them_again(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    ids = [r.run_id for r in plan_lib.resolve(spec)]
    first = FakeLauncher(fail={ids[1]: [Failure("ConfigError: boom", retryable=False)]})
    outcome = runner.run_sweep(spec, tmp_path / "out", first, progress=False, log=lambda *_: None)
    assert first.ran == ids and (outcome.finished, outcome.failed) == (3, 1)
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    failures = db.execute("SELECT run_id, error, attempt, retryable FROM failures").fetchall()
    assert failures == [(ids[1], "ConfigError: boom", 1, 0)]
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
    second = FakeLauncher()
    outcome = runner.run_sweep(spec, tmp_path / "out", second, progress=False, log=lambda *_: None)
    assert second.ran == [] and (outcome.skipped, outcome.failed_before) == (3, 1)  # a failed run stays failed
    third = FakeLauncher()
    outcome = runner.run_sweep(spec, tmp_path / "out", third, progress=False, log=lambda *_: None, retry_failed=True)
    assert third.ran == [ids[1]] and (outcome.finished, outcome.skipped) == (1, 3)
    assert [j.attempt for j in third.jobs] == [2]
    assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (4,)
    saved = Store(tmp_path / "out").get_meta("spec:test")
    assert spec_lib.parse(saved) == spec  # the spec the runs came from, in the store


def test_runs_held_by_a_live_runner_are_left_to_it(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    runs = plan_lib.resolve(spec)
    other = Store(tmp_path / "out", owner=Owner.this_process())  # live: this very process, another token
    other.add_plan(spec.name, runs)
    assert other.claim(runs[2].run_id)
    launcher = FakeLauncher()
    outcome = runner.run_sweep(spec, tmp_path / "out", launcher, progress=False, log=lambda *_: None)
    assert runs[2].run_id not in launcher.ran and len(launcher.ran) == 3
    assert outcome.held_elsewhere == 1


def test_dry_run_prints_every_run_with_flops_epochs_and_time_and_runs_nothing(tmp_path, corpus, capsys):
    path = write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", seeds=[0, 1])
    out = tmp_path / "out"
    assert main(["sweep", "run", path, "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    spec = spec_lib.load(path)
    runs = plan_lib.resolve(spec)
    data_tokens = json.loads((runner.data_dir(out, runs[0].config) / "stats.json").read_text())["tokens"]
    for r in runs:
        line = next(line for line in text.splitlines() if line.startswith(r.run_id))
        assert f"{r.accounting.compute:9.3g}" in line and f"{r.accounting.params_flops:9.3g}" in line
        assert f"{r.accounting.tokens / data_tokens:6.2f}" in line
    assert f"{len(runs)} runs" in text and "estimated time left" in text
    assert not (out / "results.sqlite").exists() and not (out / runner.RUNS).exists()


def test_a_run_that_would_repeat_data_is_refused(tmp_path, corpus, capsys):
    path = write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", budgets=[1e11])
    assert main(["sweep", "run", path, "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "epochs of the" in capsys.readouterr().err


def _results(out):
    db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
    rows = db.execute("SELECT * FROM results ORDER BY run_id").fetchall()
    db.close()
    return rows


@pytest.mark.slow
def test_a_killed_sweep_completes_only_the_missing_runs_and_ends_as_one_never_killed(tmp_path, corpus):
    path = write_spec(
        tmp_path / "spec.yaml",
        corpus,
        tmp_path / "cache",
        budgets=[1.6e8, 8e8],  # 20 and about 100 steps
        checkpoints_per_run=4,
    )
    short, long = plan_lib.resolve(spec_lib.load(path))
    every = long.config.train.checkpoint_every
    assert short.config.train.steps == 20 and long.config.train.steps > 2 * every

    def sweep(out, **env):
        command = [sys.executable, "-m", "meshlm.experiments.cli", "sweep", "run", path, "--out", str(out)]
        return subprocess.run(
            command + ["--no-progress"], env={**os.environ, **env}, capture_output=True, text=True, timeout=900
        )

    # Driver and worker die together (a lost machine) while the longer run saves its second checkpoint.
    out = tmp_path / "out"
    assert sweep(out, **{faults.SWEEP_ENV: f"checkpoint:{2 * every}"}).returncode == -signal.SIGKILL
    before = _results(out)
    assert [row[0] for row in before] == [short.run_id]

    again = sweep(out)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _results(out)
    assert sorted(r[0] for r in after) == sorted((short.run_id, long.run_id))  # every run once
    assert set(before) <= set(after)  # rows written before the kill are untouched
    assert {row[0]: row[8] for row in after} == {short.run_id: 0, long.run_id: every}  # resumed from its first
    for r, starts in ((short, 1), (long, 2)):  # finished runs never ran again
        assert (out / "runs" / r.run_id / "sweep.log").read_text().count("tokens per step") == starts
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (0,)

    # Losses and curves, bit for bit, as a sweep never killed (run id, final losses, curves).
    assert sweep(tmp_path / "straight").returncode == 0
    assert [row[:5] for row in after] == [row[:5] for row in _results(tmp_path / "straight")]


@pytest.mark.slow
def test_ray_launcher_gives_the_local_launchers_results(tmp_path, corpus):
    import ray  # the test extra installs it

    from meshlm.experiments.sweep.launchers import LocalLauncher, RayLauncher

    spec = _spec(tmp_path, corpus, seeds=[0])
    local = runner.run_sweep(spec, tmp_path / "local", LocalLauncher(), progress=False, log=lambda *_: None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # not a Ray another test runs
    try:
        launcher = RayLauncher(cpus_per_run=1)
        assert launcher.slots == 2
        remote = runner.run_sweep(spec, tmp_path / "ray", launcher, progress=False, log=lambda *_: None)
    finally:
        ray.shutdown()
    assert local.finished == remote.finished == 2
    local_rows, ray_rows = _results(tmp_path / "local"), _results(tmp_path / "ray")
    for a, b in zip(local_rows, ray_rows):
        assert a[0] == b[0]
        assert b[1] == pytest.approx(a[1], rel=1e-5)  # final validation loss
        curve_a, curve_b = json.loads(a[3]), json.loads(b[3])  # the validation curves
        assert [t for t, _ in curve_b] == [t for t, _ in curve_a]
        assert [v for _, v in curve_b] == pytest.approx([v for _, v in curve_a], rel=1e-5)


def test_the_launcher_flags_reach_the_ray_launcher_over_the_spec_s_defaults(tmp_path, corpus, monkeypatch):
    """`meshlm sweep run --launcher ray` builds RayLauncher from the spec's launcher: section with each flag given on
    the command line taking its place, and runs the plan through it (a fake here: tests/.../test_ray_hosts.py runs
    a real Ray cluster)."""
    made = []

    class RecordingRay(FakeLauncher):
        def __init__(self, **settings):
            super().__init__()
            made.append((settings, self))

    monkeypatch.setattr(launchers, "RayLauncher", RecordingRay)
    spec = {"kind": "local", "cpus_per_run": 3.0, "tpus_per_host": 4.0, "slice_head": "TPU-v4-16-head"}
    path = write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", launcher=spec, budgets=[1.6e8, 3.2e8])
    argv = ["sweep", "run", path, "--out", str(tmp_path / "out"), "--no-progress", "--launcher", "ray"]
    assert main([*argv, "--address", "auto", "--cpus-per-run", "2", "--hosts-per-run", "2"]) == 0
    ((settings, launcher),) = made
    assert settings == {
        "address": "auto",
        "cpus_per_run": 2.0,
        "gpus_per_run": 0.0,
        "hosts_per_run": 2,
        "slice_head": "TPU-v4-16-head",
        "tpus_per_host": 4.0,
        "cpu_devices": 0,
    }
    planned = plan_lib.resolve(spec_lib.load(path))
    assert sorted(launcher.ran) == sorted(r.run_id for r in planned) and len(planned) == 2
    assert Store(tmp_path / "out").finished() == {r.run_id for r in planned}
    made.clear()
    assert main(argv[:-2] + ["--address", "auto"]) == 0  # the spec's kind, local: no Ray launcher is made
    assert not made
