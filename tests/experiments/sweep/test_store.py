"""The results store: claims keep two runners off one run, dead local owners lose theirs, results are whole rows."""

import dataclasses
import sqlite3
import subprocess
import sys
import threading

import pytest

from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.store import Owner, RunResult, Store, observations
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


def test_observations_of_a_directory_without_a_store_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no results.sqlite; run `meshlm sweep run"):
        observations(tmp_path)
