"""Cooldown branching (rules.schedule: cooldown): the plan (one trunk per shape and seed, a branch per budget, what the
sweep trains), the store and the fitter's view of it, the driver starting a branch only once its trunk checkpoint
is there; and end to end (slow), a branch bitwise equal to a standalone run of its config, through kills of the trunk
and a branch, under the local launcher and Ray."""

import json
import os
import pathlib
import sqlite3

import jax
import numpy as np
import pytest
import yaml

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import envelope, runner
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.execute import execute
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.launchers import LocalLauncher
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.store import FILE, Store, observations
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training import faults
from meshlm.training.checkpoint import copy_step
from meshlm.training.run_dir import load_run
from tests.experiments.sweep.helpers import FAKE, FakeLauncher, text_corpus, write_spec

GRID = {
    "name": "c",
    "data": {"vocab_size": 300},
    "seq_len": 64,
    "head_dim": 8,
    "budgets": [1e10, 1e11],
    "shapes": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 2}],
    "seeds": [0, 1],
    "holdout": [{"flops": 3e11, "shapes": [{"d_model": 32, "n_layers": 2}]}],
}
LADDER = os.path.join(os.path.dirname(plan_lib.__file__), "..", "sweeps", "cpu-ladder.yaml")


def _plan(schedule="cooldown", **rules):
    return plan_lib.resolve(spec_lib.parse({**GRID, "rules": {"schedule": schedule, **rules}}))


def test_one_trunk_per_shape_and_seed_and_a_branch_per_budget_from_its_decay_start():
    runs = _plan()
    trunks = {r.run_id: r for r in runs if r.kind == plan_lib.TRUNK}
    branches = [r for r in runs if r.kind == plan_lib.BRANCH]
    assert len(trunks) == 4 and len(branches) == 2 * 2 * 2 + 2 and len(runs) == 14  # + the hold-out's two seeds
    assert runs[:4] == list(trunks.values())  # trunks first: their branches wait for them
    for trunk_id, trunk in trunks.items():
        t = trunk.config.train
        family = [b for b in branches if b.parent == trunk_id]
        assert {(b.config.model, b.config.train.seed) for b in family} == {(trunk.config.model, t.seed)}
        assert t.optimizer.schedule == "constant" and not trunk.holdout and trunk.branch_step == 0
        # Each branch decays over its last 20% (whole steps), starting from the trunk's checkpoint of that step.
        for b in family:
            bt = b.config.train
            assert b.branch_step == bt.steps - max(1, int(0.2 * bt.steps)) and b.branch_step in t.checkpoint_steps
            assert (bt.optimizer.schedule, bt.optimizer.decay_fraction) == ("wsd", 0.2)
            same = ("batch_size", "seq_len", "seed", "micro_batches")
            assert [getattr(bt, k) for k in same] == [getattr(t, k) for k in same]
            opt = ("peak_lr", "warmup_steps", "b1", "b2", "weight_decay", "grad_clip", "min_lr_ratio")
            assert [getattr(bt.optimizer, k) for k in opt] == [getattr(t.optimizer, k) for k in opt]
        assert t.checkpoint_steps == tuple(sorted(b.branch_step for b in family))
        assert t.steps == max(b.branch_step for b in family) and trunk.budget == max(b.budget for b in family)
        # The batch is the smallest budget's: no branch has fewer steps than a cosine run of its budget would.
        smallest = min(family, key=lambda b: b.budget)
        cosine = next(
            r
            for r in _plan("cosine")
            if (r.config.model, r.config.train.seed, r.budget) == (trunk.config.model, t.seed, smallest.budget)
        )
        assert (
            t.batch_size == cosine.config.train.batch_size and smallest.config.train.steps == cosine.config.train.steps
        )
    assert sum(b.holdout for b in branches) == 2 and all(b.budget == 3e11 for b in branches if b.holdout)
    assert len({r.run_id for r in runs}) == len(runs)


def test_a_branch_is_the_wsd_run_of_its_budget_under_its_own_id():
    """Its config, and so its id, is an ordinary wsd run's: what it computes does not depend on the trunk it came
    from. The cosine plan's ids are the ones it always had (tests/experiments/sweep/test_plan.py)."""
    branch = next(r for r in _plan(cooldown_shape="1-sqrt") if r.kind == plan_lib.BRANCH)
    assert branch.config.train.optimizer.decay_shape == "1-sqrt"
    assert plan_lib.run_id(branch.config) == branch.run_id and not branch.config.train.checkpoint_steps
    assert {r.run_id for r in _plan()}.isdisjoint(r.run_id for r in _plan("cosine"))


def test_total_flops_count_each_trunk_once_and_each_branch_s_decay():
    runs = _plan()
    plan = plan_lib.as_json(runs)
    by_hand = 0.0
    for r in runs:
        steps, per_step = r.config.train.steps, r.config.train.batch_size * r.config.seq_len
        trained = steps - r.branch_step if r.kind == plan_lib.BRANCH else steps
        by_hand += r.accounting.flops_per_token * per_step * trained
    assert plan["total_flops"] == pytest.approx(by_hand, rel=1e-12)
    row = next(row for row in plan["runs"] if row["kind"] == "branch")
    assert set(row) >= {"id", "kind", "shape", "N", "D", "C", "budget", "holdout", "parent", "branch_step"}
    assert row["C"] == pytest.approx(6 * row["N"] * row["D"])  # the branch's observation: its whole run
    cosine = plan_lib.as_json(_plan("cosine"))
    assert cosine["total_flops"] == sum(row["C"] for row in cosine["runs"])
    assert all(row["parent"] is None and row["kind"] == "run" for row in cosine["runs"])


def test_on_the_cpu_ladder_the_saving_is_what_the_grid_allows():
    """A trunk trains (1 - f) of its largest budget once; each branch its last f. So the cooldown plan costs
    (1 - f) x (sum over (shape, seed) of its largest budget) + f x (all budgets). The ladder's fitted grid puts each
    shape at four to six budgets sqrt(2) apart: under half of the cosine plan. Its hold-outs are dearer to branch
    (the larger-N one and the second seed are trunks of their own), which brings the whole plan to about 0.6."""
    with open(LADDER) as f:
        ladder = yaml.safe_load(f)
    flops = _totals(ladder)
    budgets = ladder["budgets"] + ladder["holdout"]
    every = sum(float(b["flops"]) * len(b["shapes"]) * len(b.get("seeds", [0])) for b in budgets)
    largest: dict = {}
    for b in budgets:
        for shape in b["shapes"]:
            for seed in b.get("seeds", ladder["seeds"]):
                key = (shape["d_model"], shape["n_layers"], seed)
                largest[key] = max(largest.get(key, 0.0), float(b["flops"]))
    assert flops["cosine"] == pytest.approx(every, rel=0.01)
    bound = (0.8 * sum(largest.values()) + 0.2 * every) / every
    assert flops["cooldown"] / flops["cosine"] == pytest.approx(bound, abs=0.01)
    assert 0.58 < flops["cooldown"] / flops["cosine"] < 0.62
    grid = _totals({**ladder, "holdout": []})
    assert 0.45 < grid["cooldown"] / grid["cosine"] < 0.5
    shape = [{"d_model": 48, "n_layers": 3}]
    dense = _totals(
        {**ladder, "budgets": [{"flops": 3e11 * 2 ** (k / 2), "shapes": shape} for k in range(7)], "holdout": []}
    )
    assert dense["cooldown"] / dense["cosine"] < 0.5


def test_the_plan_splits_its_flops_into_tune_fitted_grid_and_holdouts():
    """The --dry-run --json "flops": the fitted part is what the ladder without hold-outs trains, hold-outs are the
    rest of the main runs (the larger-D one's trunk steps past the last fitted branch included), the tune stage is
    its runs; the three add up to total_flops under either schedule."""
    with open(LADDER) as f:
        ladder = yaml.safe_load(f)
    grid = _totals({**ladder, "holdout": []})
    for schedule in ("cosine", "cooldown"):
        spec = spec_lib.parse({**ladder, "rules": {**ladder["rules"], "schedule": schedule}})
        tune_runs, main_runs = plan_lib.resolve_tune(spec), plan_lib.resolve(spec)
        plan = plan_lib.as_json(tune_runs + main_runs)
        parts = plan["flops"]
        assert parts["fitted"] == pytest.approx(grid[schedule], rel=1e-9)
        assert parts["tune"] == pytest.approx(sum(r.trained_compute for r in tune_runs), rel=1e-12)
        assert parts["tune"] > 0
        assert sum(parts.values()) == pytest.approx(plan["total_flops"], rel=1e-12)
        held = sum(r.trained_compute for r in main_runs if r.holdout)
        assert parts["holdout"] > held if schedule == "cooldown" else parts["holdout"] == pytest.approx(held)


def _totals(raw: dict) -> dict[str, float]:
    """total_flops of the spec `raw` under each schedule."""
    plans = {s: spec_lib.parse({**raw, "rules": {**raw["rules"], "schedule": s}}) for s in ("cosine", "cooldown")}
    return {s: plan_lib.as_json(plan_lib.resolve(spec))["total_flops"] for s, spec in plans.items()}


def test_too_short_a_run_to_branch_and_a_bad_fraction_are_refused():
    one_step = {"budgets": [1e8], "rules": {"schedule": "cooldown", "batch": {"min_tokens": 8192, "max_tokens": 8192}}}
    with pytest.raises(ConfigError, match="has 1 step"):
        plan_lib.resolve(spec_lib.parse({**GRID, **one_step}))
    with pytest.raises(ConfigError, match="rules.cooldown_fraction=1.0 must be in"):
        _plan(cooldown_fraction=1.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def _spec(tmp_path, corpus, **fields) -> spec_lib.Spec:
    """A 16x1 model at two budgets: a 33-step trunk, branches of 20 steps (from step 16) and 41 (from 33)."""
    rules = {"schedule": "cooldown", "batch": {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}}
    fields = {"budgets": [1.6e8, 3.2e8], "rules": rules, "retry_backoff_s": 0, **fields}
    return spec_lib.load(write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", **fields))


class TrunkLauncher(FakeLauncher):
    """Trains nothing, but a trunk leaves its branch points' checkpoint folders, as a real one would; `in_flight`:
    the runs submitted at each wait."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.in_flight = []

    def wait(self, timeout=None):
        self.in_flight.append([job.run_id for job in self.queue])
        job, outcome = super().wait(timeout)
        if outcome is FAKE:
            for step in job.config["train"]["checkpoint_steps"]:
                (pathlib.Path(job.run_dir) / "checkpoints" / str(step)).mkdir(parents=True)
        return job, outcome


def test_a_branch_starts_only_once_its_trunk_checkpoint_is_there(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    trunk, short, long = plan_lib.resolve(spec)
    assert (trunk.config.train.steps, short.branch_step, long.branch_step) == (33, 16, 33)
    launcher = TrunkLauncher(slots=2)
    outcome = runner.run_sweep(spec, tmp_path / "out", launcher, progress=False, log=lambda *_: None)
    assert launcher.ran == [trunk.run_id, short.run_id, long.run_id] and outcome.finished == 3
    # A slot was free while the trunk ran, but no branch had its checkpoint: the driver only looked again later.
    assert launcher.in_flight[0] == [trunk.run_id] and launcher.timeouts[0] == runner.POLL_S
    assert launcher.in_flight[1] == [short.run_id, long.run_id]
    trunk_dir = str((tmp_path / "out" / runner.RUNS / trunk.run_id).resolve())
    assert [(j.branch_from, j.branch_step) for j in launcher.jobs] == [("", 0), (trunk_dir, 16), (trunk_dir, 33)]
    db = sqlite3.connect(tmp_path / "out" / FILE)
    rows = db.execute("SELECT run_id, kind, parent, branch_step FROM runs ORDER BY rowid").fetchall()
    assert rows == [
        (trunk.run_id, "trunk", None, None),
        (short.run_id, "branch", trunk.run_id, 16),
        (long.run_id, "branch", trunk.run_id, 33),
    ]
    # The fitter never sees the trunk: its loss, at an LR never decayed, is no run's final loss.
    assert [(o.run_id, o.trunk) for o in observations(tmp_path / "out")] == [
        (short.run_id, trunk.run_id),
        (long.run_id, trunk.run_id),
    ]


def test_branches_of_a_failed_trunk_wait_and_are_named(tmp_path, corpus):
    spec = _spec(tmp_path, corpus)
    trunk, *_ = plan_lib.resolve(spec)
    launcher, lines = TrunkLauncher(fail={trunk.run_id: [Failure("ConfigError: boom", retryable=False)]}), []
    outcome = runner.run_sweep(spec, tmp_path / "out", launcher, progress=False, log=lines.append)
    assert launcher.ran == [trunk.run_id] and (outcome.failed, outcome.waiting) == (1, 2)
    assert f"2 cooldown branches wait for trunks {trunk.run_id}" in lines[-1]


def test_a_store_written_before_cooldown_branches_opens_with_its_runs_as_ordinary_runs(tmp_path):
    runs = _plan("cosine")
    store = Store(tmp_path)
    store.add_plan("c", runs)
    store.record_result(runs[0].run_id, FAKE, revision="abc")
    store.close()
    db = sqlite3.connect(tmp_path / FILE)
    for column in ("kind", "parent", "branch_step"):
        db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    db.commit()
    Store(tmp_path).close()  # adds them back, empty
    assert db.execute("SELECT DISTINCT kind, parent, branch_step FROM runs").fetchall() == [(None, None, None)]
    assert [(o.run_id, o.trunk) for o in observations(tmp_path)] == [(runs[0].run_id, "")]
    planned = [run for _, run in Store(tmp_path).planned()]
    assert {(r.kind, r.parent, r.branch_step) for r in planned} == {("run", "", 0)}


def test_approach_1_takes_a_trunk_s_cooldown_end_points_as_its_curve():
    def obs(D, loss, trunk="", curve=()):
        return Observation(N=1e5, D=D, loss=loss, C=6e5 * D, trunk=trunk, curve=curve)

    runs = [
        obs(2e6, 3.0, "t", ((1e6, 9.0), (2e6, 3.0))),
        obs(1e6, 3.5, "t", ((1e6, 3.5),)),
        obs(3e6, 2.0, curve=((1e6, 4.0), (3e6, 2.0))),
    ]
    curves = envelope.curves_of(runs)
    assert [(n, f, list(t), list(v)) for n, f, t, v in curves] == [
        (1e5, 6e5, [1e6, 3e6], [4.0, 2.0]),  # an ordinary run: its own curve
        (1e5, 6e5, [1e6, 2e6], [3.5, 3.0]),  # the branches: their final losses, not their mid-decay points
    ]


def test_a_branch_copies_its_trunk_checkpoint_once_and_never_writes_the_trunk(tmp_path):
    source, target = tmp_path / "trunk" / "checkpoints", tmp_path / "branch" / "checkpoints"
    (source / "16").mkdir(parents=True)
    (source / "16" / "state").write_text("trunk")
    (tmp_path / "branch" / "checkpoints.16.copying").mkdir(parents=True)  # a copy killed half way
    copy_step(source, target, 16)
    assert (target / "16" / "state").read_text() == "trunk"
    assert not (tmp_path / "branch" / "checkpoints.16.copying").exists()
    (target / "16").rename(target / "18")  # the branch's own checkpoint since: it resumes that, no new copy
    copy_step(source, target, 16)
    assert sorted(p.name for p in target.iterdir()) == ["18"]
    assert sorted(p.name for p in source.iterdir()) == ["16"] and (source / "16" / "state").read_text() == "trunk"
    with pytest.raises(ConfigError, match="no finished checkpoint of step 20"):
        copy_step(source, tmp_path / "other", 20)


def test_dry_run_json_prints_the_plan_as_data(tmp_path, corpus, capsys):
    path = write_spec(
        tmp_path / "spec.yaml",
        corpus,
        tmp_path / "cache",
        budgets=[1.6e8, 3.2e8],
        rules={"schedule": "cooldown", "batch": {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}},
    )
    assert main(["sweep", "run", path, "--out", str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(plan_lib.as_json(plan_lib.resolve(spec_lib.load(path)))))
    assert [r["kind"] for r in printed["runs"]] == ["trunk", "branch", "branch"]
    assert not (tmp_path / "out" / FILE).exists()


# End to end: real workers. The standalone runs are the reference: each branch's config trained from step 0.


@pytest.fixture(scope="module")
def swept(tmp_path_factory, corpus):
    """The spec every end-to-end test runs (one data cache, so one set of ids) and its uninterrupted sweep."""
    root = tmp_path_factory.mktemp("swept")
    spec = _spec(root, corpus)
    runner.run_sweep(spec, root / "out", LocalLauncher(), progress=False, log=lambda *_: None)
    return spec, root / "out"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, swept):
    """Each branch's config trained from step 0 in a directory of its own: what a branch must equal."""
    spec, out = swept
    root = tmp_path_factory.mktemp("standalone")
    results = {}
    for run in plan_lib.resolve(spec):
        if run.kind == plan_lib.BRANCH:
            tokenizer = runner.data_dir(out, run.config) / "tokenizer.model"
            path = root / run.run_id
            results[run.run_id] = (execute(config_lib.to_dict(run.config), str(path), str(tokenizer)), path)
    return results


def _rows(out) -> dict:
    db = sqlite3.connect(f"file:{out / FILE}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT run_id, final_val_loss, final_train_loss, val_curve, train_curve, resumed_from_step FROM results"
    ).fetchall()
    db.close()
    return {row[0]: row[1:] for row in rows}


def _same_params(a, b) -> bool:
    pa, pb = load_run(str(a)).params, load_run(str(b)).params
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True))


@pytest.mark.slow
def test_a_branch_equals_a_standalone_run_of_its_config_bit_for_bit(swept, standalone):
    spec, out = swept
    trunk, *branches = plan_lib.resolve(spec)
    rows = _rows(out)
    for b in branches:
        alone, path = standalone[b.run_id]
        assert rows[b.run_id][:2] == (alone.final_val_loss, alone.final_train_loss)
        assert rows[b.run_id][4] == b.branch_step  # it trained only its decay
        assert json.loads(rows[b.run_id][2])[-1] == list(alone.val_curve[-1])
        assert _same_params(out / runner.RUNS / b.run_id, path)
    # The trunk kept each branch point (16, and 33 its last), and dropped its other checkpoint (17).
    kept = sorted(int(p.name) for p in (out / runner.RUNS / trunk.run_id / "checkpoints").iterdir())
    assert kept == [16, 33]


class KillingLauncher(LocalLauncher):
    def __init__(self, kills: dict[tuple[str, int], str]):
        super().__init__()
        self.kills = kills

    def environment(self, job):
        env = {k: v for k, v in super().environment(job).items() if k != faults.ENV}
        if (job.run_id, job.attempt) in self.kills:
            env[faults.ENV] = self.kills[job.run_id, job.attempt]
        return env


@pytest.mark.slow
def test_killing_the_trunk_and_a_branch_loses_nothing(tmp_path, swept):
    """The trunk dies while saving step 17 (orbax has finished 16 first), the 41-step branch while saving its step 40
    (its 36 finished): each resumes its own checkpoint, and every result is the uninterrupted sweep's, bit for bit."""
    spec = swept[0]
    trunk, short, long = plan_lib.resolve(spec)
    kills = {(trunk.run_id, 1): "checkpoint:17", (long.run_id, 1): "checkpoint:40"}
    outcome = runner.run_sweep(spec, tmp_path / "out", KillingLauncher(kills), progress=False, log=lambda *_: None)
    assert (outcome.finished, outcome.failed) == (3, 0)
    killed, whole = _rows(tmp_path / "out"), _rows(swept[1])
    for run in (short, long):
        assert killed[run.run_id][:4] == whole[run.run_id][:4]  # losses and curves
    assert (killed[trunk.run_id][4], killed[long.run_id][4]) == (16, 36)  # where the second tries resumed
    assert _same_params(tmp_path / "out" / runner.RUNS / long.run_id, swept[1] / runner.RUNS / long.run_id)
    kept = sorted(int(p.name) for p in (tmp_path / "out" / runner.RUNS / trunk.run_id / "checkpoints").iterdir())
    assert kept == [16, 33]


@pytest.mark.slow
def test_under_ray_branches_wait_for_their_trunk_and_give_the_same_results(tmp_path, swept, monkeypatch):
    import ray  # the test extra installs it

    from meshlm.experiments.sweep.launchers import RayLauncher

    monkeypatch.setattr(runner, "POLL_S", 0.5)
    spec = swept[0]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # not a Ray another test runs
    try:
        outcome = runner.run_sweep(spec, tmp_path / "out", RayLauncher(cpus_per_run=1), progress=False, log=print)
    finally:
        ray.shutdown()
    assert outcome.finished == 3
    remote, local = _rows(tmp_path / "out"), _rows(swept[1])
    for run_id, row in local.items():
        assert remote[run_id][0] == pytest.approx(row[0], rel=1e-5)
        assert remote[run_id][1] == pytest.approx(row[1], rel=1e-5)
