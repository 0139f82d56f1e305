"""Retries: a killed or crashed run is tried again after a growing wait, its tries counted in the store across
drivers; a deterministic failure, or a run out of retries, is recorded failed with its reason and left alone. End to
end (slow): worker processes killed with MESHLM_KILL_AT resume from their checkpoints to the uninterrupted result."""

import dataclasses
import sqlite3

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import runner, status
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.launchers import LocalLauncher
from meshlm.experiments.sweep.store import FAILED, RETRYING, Store
from meshlm.model.errors import ConfigError
from meshlm.training import faults
from tests.experiments.sweep.helpers import FakeLauncher, text_corpus, write_spec

KILLED = Failure("killed by signal 9 (Killed)", retryable=True)
OOM = Failure("out of memory: JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory", retryable=False)


class FakeTime:
    """A clock that moves only when the driver sleeps on it."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def _spec(tmp_path, corpus, **fields) -> spec_lib.Spec:
    fields = {"seeds": [0, 1], "retry_backoff_s": 5, "retry_backoff_max_s": 8, **fields}
    return spec_lib.load(write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", **fields))


def _run(spec, out, launcher, time=None, **kwargs) -> runner.Outcome:
    time = time or FakeTime()
    quiet = {"progress": False, "log": lambda *_: None, "clock": time.clock, "sleep": time.sleep}
    return runner.run_sweep(spec, out, launcher, **quiet, **kwargs)


def _failures(out) -> list[tuple]:
    db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
    rows = db.execute("SELECT run_id, error, attempt, retryable FROM failures ORDER BY rowid").fetchall()
    db.close()
    return rows


def test_a_killed_run_is_retried_after_a_doubling_wait_and_finishes(tmp_path, corpus):
    spec = _spec(tmp_path, corpus, retry_backoff_max_s=100)
    a, b = (r.run_id for r in plan_lib.resolve(spec))
    launcher, time = FakeLauncher(fail={a: [KILLED, KILLED]}), FakeTime()
    outcome = _run(spec, tmp_path / "out", launcher, time)
    assert launcher.ran == [a, b, a, a]  # the other run goes on while `a` waits
    assert [job.attempt for job in launcher.jobs] == [1, 1, 2, 3]
    assert time.slept == [5, 10]
    assert (outcome.finished, outcome.failed) == (2, 0)
    assert _failures(tmp_path / "out") == [(a, KILLED.reason, 1, 1), (a, KILLED.reason, 2, 1)]
    state = Store(tmp_path / "out").states()[a]
    assert (state.state, state.attempts, state.failures) == ("done", 3, 2)


def test_a_run_killed_more_times_than_its_retries_fails_with_the_last_reason(tmp_path, corpus):
    spec = _spec(tmp_path, corpus, retries=2)
    a, b = (r.run_id for r in plan_lib.resolve(spec))
    kills = [Failure(f"killed by signal 9 (try {i})", retryable=True) for i in range(1, 6)]
    launcher, time = FakeLauncher(fail={a: kills}), FakeTime()
    outcome = _run(spec, tmp_path / "out", launcher, time)
    assert launcher.ran.count(a) == 3 and time.slept == [5, 8]  # 5, then 10 capped at 8
    assert (outcome.finished, outcome.failed) == (1, 1)
    failed = {s.run_id: s for s in status.read(tmp_path / "out")}[a]
    assert (failed.state, failed.attempts, failed.reason) == (FAILED, 3, "killed by signal 9 (try 3)")
    again = FakeLauncher()
    assert _run(spec, tmp_path / "out", again).failed_before == 1
    assert again.ran == []  # not retried further


def test_a_deterministic_failure_is_not_retried_and_keeps_its_reason(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    a, b = (r.run_id for r in plan_lib.resolve(spec))
    launcher, time = FakeLauncher(fail={a: [OOM]}), FakeTime()
    outcome = _run(spec, tmp_path / "out", launcher, time)
    assert launcher.ran == [a, b] and time.slept == []
    assert (outcome.finished, outcome.failed) == (1, 1)
    assert _failures(tmp_path / "out") == [(a, OOM.reason, 1, 0)]
    state = Store(tmp_path / "out").states()[a]
    assert (state.state, state.attempts, state.failures, state.reason) == (FAILED, 1, 0, OOM.reason)


def test_the_retries_used_carry_over_to_the_next_driver(tmp_path, corpus):
    """A driver killed while its run waits for a retry: the next one tries it again and counts on from there."""
    spec = _spec(tmp_path, corpus, retries=1)
    a, _ = (r.run_id for r in plan_lib.resolve(spec))
    time = FakeTime()

    def killed_driver(seconds):
        raise KeyboardInterrupt

    time.sleep = killed_driver
    with pytest.raises(KeyboardInterrupt):
        _run(spec, tmp_path / "out", FakeLauncher(fail={a: [KILLED]}), time)
    assert Store(tmp_path / "out").states()[a].state == RETRYING
    launcher = FakeLauncher(fail={a: [KILLED]})
    outcome = _run(spec, tmp_path / "out", launcher)
    assert launcher.ran == [a] and [job.attempt for job in launcher.jobs] == [2]
    assert outcome.failed == 1  # its second retryable failure, with retries=1


def test_a_retry_due_while_another_run_trains_is_waited_for_no_longer_than_its_backoff(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    a, b = (r.run_id for r in plan_lib.resolve(spec))
    launcher = FakeLauncher(fail={a: [KILLED]}, slots=2)
    _run(spec, tmp_path / "out", launcher)
    assert launcher.timeouts[:2] == [None, 5.0]  # b still training: the wait for it ends when a's retry is due


def test_retries_and_backoff_are_checked():
    with pytest.raises(ConfigError, match="retries=-1"):
        spec_lib.parse({"name": "s", "budgets": [1e9], "shapes": [{"d_model": 16, "n_layers": 1}], "retries": -1})
    with pytest.raises(ConfigError, match="retry_backoff_s <= retry_backoff_max_s"):
        spec_lib.parse(
            {"name": "s", "budgets": [1e9], "shapes": [{"d_model": 16, "n_layers": 1}], "retry_backoff_s": 900}
        )


class FaultyLauncher(LocalLauncher):
    """Real worker processes, with a fault point (training/faults.py) on chosen tries and a broken mesh for chosen
    runs."""

    def __init__(self, kills: dict[tuple[str, int], str], broken=()):
        super().__init__()
        self.kills, self.broken = kills, set(broken)

    def environment(self, job):
        env = {k: v for k, v in super().environment(job).items() if k != faults.ENV}
        if (job.run_id, job.attempt) in self.kills:
            env[faults.ENV] = self.kills[job.run_id, job.attempt]
        return env

    def submit(self, job):
        if job.run_id in self.broken:  # fails in the worker, after planning: a deterministic error
            job = dataclasses.replace(job, config={**job.config, "mesh": {**job.config["mesh"], "shape": "data=3"}})
        super().submit(job)


def _result_row(out, run_id) -> tuple:
    db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
    row = db.execute(
        "SELECT final_val_loss, final_train_loss, val_curve, train_curve, resumed_from_step FROM results "
        "WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    db.close()
    return row


@pytest.mark.slow
def test_a_run_killed_twice_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path, corpus):
    """20 steps, checkpoints at 10 and 20: the first try dies while saving step 20, the second as it resumes at 10."""
    spec = _spec(tmp_path, corpus, seeds=[0], retry_backoff_s=0)
    (run,) = plan_lib.resolve(spec)
    _run(spec, tmp_path / "whole", LocalLauncher())
    kills = {(run.run_id, 1): "checkpoint:20", (run.run_id, 2): "setup:10"}
    outcome = _run(spec, tmp_path / "killed", FaultyLauncher(kills))
    assert (outcome.finished, outcome.failed) == (1, 0)
    whole, killed = _result_row(tmp_path / "whole", run.run_id), _result_row(tmp_path / "killed", run.run_id)
    assert killed[:4] == whole[:4]  # losses and curves, bitwise
    assert (whole[4], killed[4]) == (0, 10)
    reason = "killed by signal 9 (Killed)"
    assert _failures(tmp_path / "killed") == [(run.run_id, reason, 1, 1), (run.run_id, reason, 2, 1)]
    assert Store(tmp_path / "killed").states()[run.run_id].attempts == 3


@pytest.mark.slow
def test_killed_past_its_retries_or_failing_for_good_a_run_is_failed_with_its_reason(tmp_path, corpus, capsys):
    spec = _spec(tmp_path, corpus, retries=1, retry_backoff_s=0)
    killed, broken = (r.run_id for r in plan_lib.resolve(spec))
    launcher = FaultyLauncher({(killed, 1): "setup:0", (killed, 2): "setup:0"}, broken={broken})
    outcome = _run(spec, tmp_path / "out", launcher)
    assert (outcome.finished, outcome.failed) == (0, 2)
    rows = _failures(tmp_path / "out")
    assert [r for r in rows if r[0] == killed] == [(killed, "killed by signal 9 (Killed)", a, 1) for a in (1, 2)]
    ((_, reason, attempt, retryable),) = [r for r in rows if r[0] == broken]
    assert reason.startswith("ConfigError: mesh 'data=3' needs 3 devices") and (attempt, retryable) == (1, 0)
    assert "Traceback" in (tmp_path / "out" / runner.RUNS / broken / "sweep.log").read_text()
    assert main(["sweep", "status", str(tmp_path / "out")]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines[killed].startswith("failed") and lines[killed].endswith("killed by signal 9 (Killed)")
    assert lines[broken].startswith("failed") and "ConfigError: mesh 'data=3'" in lines[broken]
