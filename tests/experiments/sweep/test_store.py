"""The results store: claims keep two runners off one run, dead local owners lose theirs, results are whole rows,
a failed try leaves its run retrying or failed, and a store written before retries existed opens with its rows."""

import dataclasses
import sqlite3
import subprocess
import sys
import threading

import pytest

from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.store import FAILED, PENDING, RETRYING, Owner, RunResult, Store, observations
from meshlm.model.errors import ConfigError

SPEC = {
    "name": "s",
    "data": {"vocab_size": 300},
    "seq_len": 32,
    "head_dim": 8,
    "budgets": [1e9, 1e10],
    "shapes": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}],
    "holdout": [{"flops": 1e11, "shapes": [{"d_model": 32, "n_layers": 2}]}],
}
RESULT = RunResult(
    final_val_loss=3.5,
    final_train_loss=3.4,
    val_curve=((100, 4.0), (200, 3.5)),
    train_curve=((100, 4.1), (200, 3.4)),
    wall_time_s=2.0,
    tokens_per_s=1e4,
    flops_per_s=1e9,
    resumed_from_step=0,
    host="here",
)


@pytest.fixture
def runs():
    return plan_lib.resolve(spec_lib.parse(SPEC))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_runner_keeps_its_claim_and_a_dead_ones_is_taken_over(tmp_path, runs):
    first, second = Store(tmp_path), Store(tmp_path)
    first.add_plan("s", runs)
    rid = runs[0].run_id
    assert first.claim(rid) and first.claim(rid)  # idempotent for the owner
    assert not second.claim(rid)
    dead = Store(tmp_path, owner=Owner(first.owner.host, _dead_pid(), "gone"))
    assert dead.claim(runs[1].run_id)
    assert second.claim(runs[1].run_id)  # its owner's process has exited
    remote = Store(tmp_path, owner=Owner("another-host", _dead_pid(), "far"))
    assert remote.claim(runs[2].run_id)
    assert not second.claim(runs[2].run_id)  # a pid on another host cannot be checked: the claim stands


def test_a_finished_run_cannot_be_claimed_and_its_claim_is_gone(tmp_path, runs):
    store = Store(tmp_path)
    store.add_plan("s", runs)
    rid = runs[0].run_id
    assert store.claim(rid)
    store.record_result(rid, RESULT, revision="abc")
    assert store.finished() == {rid}
    assert not store.claim(rid) and not Store(tmp_path).claim(rid)
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
    with pytest.raises(sqlite3.IntegrityError):  # a second result for one run is refused, never a duplicate row
        store.record_result(rid, RESULT, revision="abc")
    assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (1,)


def test_concurrent_runners_claim_disjoint_sets(tmp_path, runs):
    Store(tmp_path).add_plan("s", runs)
    taken: dict[int, list[str]] = {}

    def runner(i):
        store = Store(tmp_path)
        taken[i] = [r.run_id for r in runs if store.claim(r.run_id)]

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [rid for ids in taken.values() for rid in ids]
    assert sorted(claimed) == sorted(r.run_id for r in runs)


def test_observations_carry_the_accounting_and_the_holdout_tag(tmp_path, runs):
    store = Store(tmp_path)
    store.add_plan("s", runs)
    for i, run in enumerate(runs):
        store.record_result(run.run_id, dataclasses.replace(RESULT, final_val_loss=3.0 + i), revision="abc")
    obs = {o.run_id: o for o in observations(tmp_path)}
    assert len(obs) == len(runs)
    for i, run in enumerate(runs):
        o = obs[run.run_id]
        assert (o.N, o.D, o.C, o.budget) == (
            run.accounting.params_flops,
            run.accounting.tokens,
            run.accounting.compute,
            run.budget,
        )
        assert o.loss == 3.0 + i and o.holdout == run.holdout
        assert o.curve == ((100.0, 4.0), (200.0, 3.5))
    assert sum(o.holdout for o in obs.values()) == 1
    assert all(o.unique_tokens is None and o.epochs is None for o in obs.values())  # planned without a count


def test_observations_of_a_directory_without_a_store_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no results.sqlite; run `meshlm sweep run"):
        observations(tmp_path)


def test_a_failed_try_leaves_the_run_retrying_until_its_retries_are_spent(tmp_path, runs):
    store = Store(tmp_path)
    store.add_plan("s", runs)
    rid = runs[0].run_id
    killed = Failure("killed by signal 9 (Killed)", retryable=True)
    assert store.claim(rid)
    for attempt in (1, 2):
        assert store.start_attempt(rid) == attempt
        assert store.record_failure(rid, killed, retries=1).state == (RETRYING if attempt == 1 else FAILED)
    assert store.states()[rid].failures == 2 and store.failed() == {rid}
    assert Store(tmp_path).claim(rid)  # a failed run's claim is released
    store.reset_failed()
    assert store.states()[rid].state == PENDING and store.failed() == set()
    assert store.start_attempt(rid) == 3  # tries keep counting; the retry budget starts again
    assert store.record_failure(rid, killed, retries=1).state == RETRYING


def test_a_store_written_before_retries_opens_with_every_row(tmp_path, runs):
    """Today's tables without `states` and with the first `failures` table: results and failures are all kept."""
    store = Store(tmp_path)
    store.add_plan("s", runs)
    store.record_result(runs[0].run_id, RESULT, revision="abc")
    store.close()
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.executescript(
        "DROP TABLE states; DROP TABLE failures; CREATE TABLE failures (run_id TEXT NOT NULL, error TEXT NOT NULL, "
        "host TEXT NOT NULL, at TEXT NOT NULL);"
    )
    db.execute("INSERT INTO failures VALUES (?, 'RuntimeError: boom', 'h', 't')", (runs[1].run_id,))
    db.commit()
    before = db.execute("SELECT * FROM results").fetchall()
    reopened = Store(tmp_path)
    Store(tmp_path)  # a second opening finds the columns there
    assert db.execute("SELECT * FROM results").fetchall() == before
    rows = db.execute("SELECT run_id, error, attempt, retryable FROM failures").fetchall()
    assert rows == [(runs[1].run_id, "RuntimeError: boom", None, None)]
    states = reopened.states()
    assert states[runs[0].run_id].state == "done"
    assert states[runs[1].run_id].state == PENDING  # as before retries: a failure recorded then is run again
    assert [o.run_id for o in observations(tmp_path)] == [runs[0].run_id]


def test_each_run_records_the_split_it_read_so_its_epochs_are_known(tmp_path, runs):
    store = Store(tmp_path)
    U = runs[0].accounting.tokens / 2.5
    store.add_plan("s", runs, data_tokens=U)
    for run in runs:
        store.record_result(run.run_id, RESULT, revision="abc")
    obs = {o.run_id: o for o in observations(tmp_path)}
    assert obs[runs[0].run_id].epochs == pytest.approx(2.5)
    for run in runs:
        assert obs[run.run_id].unique_tokens == U
        assert obs[run.run_id].epochs == pytest.approx(run.accounting.tokens / U)
