"""The sweep driver: skip finished runs, leave other runners' runs alone, record failures, dry-run the plan; and
end to end, a sweep killed with SIGKILL and re-run completes only what was missing. Retries: test_retries.py."""

import contextlib
import json
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import runner
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.store import Owner, Store, _alive
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


def _children(pid: int) -> list[int]:
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended while we looked
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _wait_until_gone(pids: list[int], seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while any(_alive(socket.gethostname(), pid) for pid in pids):
        assert time.time() < deadline, f"worker processes {pids} outlived their driver"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_sweep_killed_mid_run_completes_only_the_missing_runs(tmp_path, corpus):
    path = write_spec(
        tmp_path / "spec.yaml",
        corpus,
        tmp_path / "cache",
        budgets=[1.6e8, 1.6e9],  # 20 and 200 steps
        checkpoints_per_run=4,
    )
    out = tmp_path / "out"
    runs = plan_lib.resolve(spec_lib.load(path))
    command = [sys.executable, "-m", "meshlm.experiments.cli", "sweep", "run", path, "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once some run is finished and a later one has a checkpoint but no result (each run starts a worker
    # process, which imports JAX: minutes on a loaded 2-core machine).
    deadline = time.time() + 900
    while time.time() < deadline:
        done = {r[0] for r in _results(out)} if (out / "results.sqlite").exists() else set()
        midway = [
            r
            for r in runs
            if r.run_id not in done
            and any(p.name.isdigit() for p in (out / "runs" / r.run_id / "checkpoints").glob("*"))
        ]
        if done and midway:
            break
        assert proc.poll() is None, "the sweep finished before it could be killed"
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) == 1  # the run in flight, in its own process: it dies with its driver, so the re-run
    _wait_until_gone(workers)  # below is the only process writing that run's directory
    before = _results(out)
    assert 1 <= len(before) < len(runs)

    subprocess.run(command, check=True, capture_output=True, timeout=600)
    after = _results(out)
    assert sorted(r[0] for r in after) == sorted(r.run_id for r in runs)  # every run once
    assert set(before) <= set(after)  # rows written before the kill are untouched
    assert all(None not in (row[1], row[3], row[5], row[9], row[11]) for row in after)
    resumed = [row for row in after if row[8] > 0]
    assert [row[0] for row in resumed] == [midway[0].run_id]
    for r in runs:
        starts = (out / "runs" / r.run_id / "sweep.log").read_text().count("tokens per step")
        assert starts == (2 if r.run_id == midway[0].run_id else 1)  # finished runs never ran again
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (0,)


@pytest.mark.slow
def test_ray_launcher_gives_the_local_launchers_results(tmp_path, corpus):
    import ray  # the test extra installs it

    from meshlm.experiments.sweep.launchers import LocalLauncher, RayLauncher

    spec = _spec(tmp_path, corpus, seeds=[0])
    local = runner.run_sweep(spec, tmp_path / "local", LocalLauncher(), progress=False, log=lambda *_: None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
