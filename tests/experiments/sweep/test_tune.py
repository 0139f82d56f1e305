"""The tune stage (spec `tune:`): the U-curve and power-law fits against synthetic losses of a known optimum, edge
minima flagged and left out, the plan (tune runs apart, main runs at the fitted LR under ids of their own), the
driver (tune stage first, main runs planned from its fit, a re-run trains nothing), the report's section; and end to
end (slow), real tune runs whose fitted LR the main run's saved config holds."""

import dataclasses
import json
import math
import os
import sqlite3

import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import parabola, plots, runner, tune, tune_report
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.accounting import flop_params
from meshlm.experiments.sweep.launchers import LocalLauncher
from meshlm.experiments.sweep.powerlaw import PowerLaw
from meshlm.experiments.sweep.store import FILE, Store, observations
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training.run_dir import CONFIG
from tests.experiments.sweep.helpers import FAKE, FakeLauncher, text_corpus, write_spec
from tests.experiments.sweep.synthetic import HOFFMANN

SHAPES = [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}, {"d_model": 48, "n_layers": 1}]
SPEC = {
    "name": "t",
    "data": {"vocab_size": 300},
    "seq_len": 32,
    "head_dim": 8,
    "budgets": [1.6e8],
    "shapes": SHAPES,
    "rules": {"batch": {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}},
    "eval": {"sequences": 16, "per_run": 2},
    "tune": {"tokens_per_param": 0.25, "lr_grid": [0.5, 1, 2, 4, 8]},
}
TRUE_LR = PowerLaw(k=2e-2 * 1e4**0.5, p=-0.5)  # LR*(N) = 2e-2 (N / 1e4)^-0.5: inside every shape's grid
TRUE_BATCH = PowerLaw(k=150 / 1.5e8**0.2, p=0.2)  # B*(C) tokens per step, inside every shape's batch grid


def _spec(**tune_fields) -> spec_lib.Spec:
    return spec_lib.parse({**SPEC, "tune": {**SPEC["tune"], **tune_fields}})


def _n(cfg: config_lib.Config) -> float:
    return flop_params(cfg.model, cfg.seq_len)


def u_curve(cfg: config_lib.Config, lr_opt=TRUE_LR, batch_opt=None) -> float:
    """Chinchilla's loss at the run's N and D, plus a term exactly quadratic in ln LR around lr_opt(N); with
    batch_opt, quadratic in ln B around B*(C) as well, and LR* growing as sqrt(B / B*) (so each batch's own LR*
    differs and the fit must read it at B*)."""
    t = cfg.train
    tokens = t.steps * t.batch_size * t.seq_len
    best, loss = lr_opt(_n(cfg)), float(HOFFMANN.loss(_n(cfg), tokens))
    if batch_opt is not None:
        step_tokens = t.batch_size * t.seq_len
        b_opt = batch_opt(6 * _n(cfg) * tokens)
        best *= math.sqrt(step_tokens / b_opt)
        loss += 0.05 * math.log(step_tokens / b_opt) ** 2
    return loss + 0.1 * math.log(t.optimizer.peak_lr / best) ** 2


def test_the_parabola_in_log_lr_and_the_power_law_recover_a_known_optimum():
    spec = _spec()
    runs = plan_lib.resolve_tune(spec)
    fitted = tune.fit(spec, runs, {r.run_id: u_curve(r.config) for r in runs})
    assert [s.reason for s in fitted.shapes] == ["", "", ""]
    for s in fitted.shapes:
        assert s.lr_opt == pytest.approx(TRUE_LR(s.N), rel=1e-6)
        (curve,) = s.curves
        assert curve.fit.y == pytest.approx(HOFFMANN.loss(s.N, s.C / (6 * s.N)), abs=1e-9) and len(curve.lr) == 5
    assert (fitted.rules.lr.k, fitted.rules.lr.p) == pytest.approx((TRUE_LR.k, TRUE_LR.p), rel=1e-6)
    assert fitted.lr_exponent == tune.FITTED and fitted.rules.batch is None


def test_a_batch_grid_recovers_b_star_of_c_and_reads_lr_star_at_it():
    spec = _spec(batch_grid=[0.5, 1, 2, 4])
    runs = plan_lib.resolve_tune(spec)
    assert sorted({r.config.train.batch_size for r in runs}) == [2, 4, 8, 16]
    fitted = tune.fit(spec, runs, {r.run_id: u_curve(r.config, batch_opt=TRUE_BATCH) for r in runs})
    assert [s.reason for s in fitted.shapes] == ["", "", ""]
    for s in fitted.shapes:
        assert s.tokens_per_step_opt == pytest.approx(TRUE_BATCH(s.C), rel=1e-3)
        assert s.lr_opt == pytest.approx(TRUE_LR(s.N), rel=1e-3)
        assert len({c.lr_opt for c in s.curves}) == 4  # each batch's LR* differs
    assert (fitted.rules.batch.k, fitted.rules.batch.p) == pytest.approx((TRUE_BATCH.k, TRUE_BATCH.p), rel=1e-3)


def test_a_minimum_at_the_grid_edge_is_flagged_and_left_out_of_the_power_law():
    spec = _spec()
    runs = plan_lib.resolve_tune(spec)
    widest = max(r.accounting.params_flops for r in runs)

    def lr_opt(n):  # the largest size's optimum lies 10x above its grid's top
        return 10 * 8 * plan_lib.rule_lr(spec, n) if n == widest else TRUE_LR(n)

    fitted = tune.fit(spec, runs, {r.run_id: u_curve(r.config, lr_opt=lr_opt) for r in runs})
    edge = fitted.shapes[-1]
    assert edge.reason == "lowest loss at the largest LR: widen the grid" and edge.lr_opt is None
    assert [s.reason for s in fitted.shapes[:2]] == ["", ""]
    assert (fitted.rules.lr.k, fitted.rules.lr.p) == pytest.approx((TRUE_LR.k, TRUE_LR.p), rel=1e-6)
    assert "from 2 of 3 sizes" in tune.summary(fitted, plan_lib.resolve(spec, fitted.rules))

    nowhere = tune.fit(spec, runs, {r.run_id: u_curve(r.config, lr_opt=lambda n: 1e3) for r in runs})
    assert nowhere.rules is None  # every minimum off its grid: nothing to plan the main runs with


def test_with_one_size_identified_the_exponent_is_the_rules_and_failed_runs_are_named():
    spec = _spec()
    runs = plan_lib.resolve_tune(spec)
    first = runs[0].accounting.params_flops
    off_grid = {48: lambda n: 1e3}  # the 32-wide runs all failed, the 48-wide optimum is far above its grid
    finished = [r for r in runs if r.config.model.d_model != 32]
    losses = {r.run_id: u_curve(r.config, lr_opt=off_grid.get(r.config.model.d_model, TRUE_LR)) for r in finished}
    fitted = tune.fit(spec, runs, losses)
    assert [bool(s.reason) for s in fitted.shapes] == [False, True, True]
    middle = fitted.shapes[1]  # a diverged run fails (train.nonfinite=stop): its LR is named, its curve has no point
    assert middle.reason == "only 0 LR(s); a parabola needs 3" and len(middle.curves[0].failed) == 5
    assert fitted.lr_exponent == tune.FROM_RULES and fitted.rules.lr.p == spec.rules.lr.exponent
    assert fitted.rules.lr(first) == pytest.approx(TRUE_LR(first), rel=1e-6)
    assert "the exponent is rules.lr's" in tune.summary(fitted, plan_lib.resolve(spec, fitted.rules))


def test_lr_star_comes_from_the_bottom_of_the_u_not_its_walls():
    """The 32x2 tune curve of the CPU ladder (3e11 FLOPs; docs/scaling.md): the loss rises steeply past LR* and the
    runs near divergence level off, so a parabola through all five points puts its minimum outside the grid. Through
    the lowest point and its neighbours it sits between them, near the lowest LR. A quadratic U is exact either way."""
    lr = np.log([0.00308, 0.00616, 0.0123, 0.0246, 0.0492])
    loss = [3.2327, 3.1971, 3.2552, 3.5008, 3.4764]
    assert parabola.vertex(lr, loss, what="LR").flag == "parabola minimum outside the grid"
    v = parabola.vertex_near_lowest(lr, loss, what="LR")
    assert v.flag == "" and lr[0] < v.x < lr[2] and abs(v.x - lr[1]) < 0.2
    assert v.y == pytest.approx(3.1964, abs=1e-4)
    x = np.linspace(-3.0, 3.0, 7)
    shuffled = [5, 0, 3, 6, 1, 4, 2]
    near = parabola.vertex_near_lowest(x[shuffled], (2.0 * (x - 0.7) ** 2 + 1.0)[shuffled])
    assert near.x == pytest.approx(0.7) and near.y == pytest.approx(1.0)
    edge = parabola.vertex_near_lowest(x, -x, what="LR")
    assert edge.flag == "lowest loss at the largest LR: widen the grid"


def test_the_parabola_flags_what_it_cannot_bracket():
    x = [0.0, 1.0, 2.0, 3.0]
    assert parabola.vertex(x, [1.0, 0.5, 0.6, 1.2]).x == pytest.approx(1.4, abs=0.1)
    assert parabola.vertex(x, [1.0, 0.5, 0.4, 0.3], what="LR").flag == "lowest loss at the largest LR: widen the grid"
    assert parabola.vertex(x, [1.0, 0.2, 0.2, 1.0]).x == pytest.approx(1.5)
    assert parabola.vertex([0.0, 1.0], [1.0, 0.5]).flag == "only 2 point(s); a parabola needs 3"
    assert parabola.vertex(x, [0.0, 1.0, 1.1, 0.2]).flag == "lowest loss at the smallest point: widen the grid"
    assert parabola.vertex([*x, 4.0], [0.0, -1.0, 0.5, 0.6, 0.0]).flag == "parabola opens downwards"


def test_the_plan_lists_tune_runs_apart_and_main_runs_take_the_fitted_lr_under_new_ids():
    spec = _spec()
    tune_runs = plan_lib.resolve_tune(spec)
    assert len(tune_runs) == 3 * 5 and {r.kind for r in tune_runs} == {plan_lib.TUNE}
    for r in tune_runs:  # the grid multiplies rules.lr at each size; the budget is 0.25 tokens per parameter
        n = r.accounting.params_flops
        assert r.budget == pytest.approx(6 * 0.25 * n * n)
        multiple = r.config.train.optimizer.peak_lr / plan_lib.rule_lr(spec, n)
        assert min(abs(multiple - m) for m in (0.5, 1, 2, 4, 8)) < 1e-12
    untuned = plan_lib.resolve(spec_lib.parse({k: v for k, v in SPEC.items() if k != "tune"}))
    assert [r.run_id for r in plan_lib.resolve(spec)] == [r.run_id for r in untuned]  # provisional: the rules'
    tuned = plan_lib.resolve(spec, plan_lib.Tuned(TRUE_LR))
    for r in tuned:
        assert r.config.train.optimizer.peak_lr == float(f"{TRUE_LR(r.accounting.params_flops):.3g}")
    assert {r.run_id for r in tuned}.isdisjoint(r.run_id for r in untuned)
    again = plan_lib.resolve(spec, plan_lib.Tuned(PowerLaw(TRUE_LR.k * (1 + 1e-9), TRUE_LR.p)))
    assert [r.run_id for r in again] == [r.run_id for r in tuned]  # 3 digits: a refit's last bits keep the ids
    other = plan_lib.resolve(spec, plan_lib.Tuned(PowerLaw(TRUE_LR.k * 1.1, TRUE_LR.p)))
    assert {r.run_id for r in other}.isdisjoint(r.run_id for r in tuned)
    with_batch = plan_lib.resolve(spec, plan_lib.Tuned(TRUE_LR, PowerLaw(k=256.0, p=0.0)))
    assert {r.config.train.batch_size for r in with_batch} == {8}  # 256 tokens of 32
    plan = plan_lib.as_json(tune_runs + tuned)
    assert [row["stage"] for row in plan["runs"]] == ["tune"] * 15 + ["main"] * 3
    assert plan["runs"][0]["peak_lr"] == tune_runs[0].config.train.optimizer.peak_lr
    assert plan["total_flops"] == pytest.approx(sum(r.trained_compute for r in tune_runs + tuned))


def test_the_gpu_ladder_tunes_three_sizes_for_a_sixth_of_its_main_runs():
    """docs/scaling.md's figures, by hand: 3 sizes x 5 LRs, each run at 20 tokens per FLOP-equivalent parameter
    (C = 6 N D = 120 N^2). The main runs are cooldown branches: each shape's trunk trains 0.8 of its largest budget
    once, each branch the last 0.2 of its own; the two 1e20 hold-outs are shapes of their own. Whole steps may pass a
    budget by under one batch: 1 %."""
    ladder = spec_lib.load(os.path.join(os.path.dirname(plan_lib.__file__), "..", "sweeps", "gpu-ladder.yaml"))
    tune_runs, main_runs = plan_lib.resolve_tune(ladder), plan_lib.resolve(ladder)
    assert len(tune_runs) == 15 and len({r.accounting.params_flops for r in tune_runs}) == 3
    tuned = sum(r.trained_compute for r in tune_runs)
    assert tuned == pytest.approx(sum(120 * r.accounting.params_flops**2 for r in tune_runs), rel=0.01)
    windows = {  # budget: shapes at it, as the spec lists them
        1e18: 4,
        1.41e18: 4,
        2e18: 4,
        2.83e18: 4,
        4e18: 5,
        5.66e18: 4,
        8e18: 4,
        1.13e19: 4,
        1.6e19: 4,
        2.26e19: 4,
    }
    every = sum(C * n for C, n in windows.items()) + 2 * 1e20
    largest = 1e18 + 4e18 + 8e18 + 4 * 2.26e19 + 2 * 1e20  # 384x6, 512x8, 640x10, then 768x12 to 1536x24; hold-outs
    main = sum(r.trained_compute for r in main_runs)
    assert main == pytest.approx(0.8 * largest + 0.2 * every, rel=0.01)
    assert tuned == pytest.approx(6.06e19, rel=0.01) and tuned / main == pytest.approx(0.176, abs=0.005)


def test_tune_spec_errors_name_the_fix():
    for fields, match in (
        ({"lrs": [1e-3, 1e-2, 1e-1]}, "both lr_grid"),
        ({"lr_grid": [1, 2]}, "a parabola needs 3"),
        ({"lr_grid": [1, 1, 2]}, "distinct positive"),
        ({"tokens_per_param": None, "flops": 1e9, "batch_grid": [0.5, 1, 2]}, "B\\*\\(C\\) cannot be fitted"),
        ({"flops": 1e9}, "both tokens_per_param and flops"),
        ({"seeds": []}, "tune.seeds is empty"),
    ):
        with pytest.raises(ConfigError, match=match):
            _spec(**fields)
    with pytest.raises(ConfigError, match="unknown key 'grid' in TuneRule"):
        spec_lib.parse({**SPEC, "tune": {"grid": [1, 2, 3]}})
    with pytest.raises(ConfigError, match="not a whole multiple"):
        plan_lib.resolve_tune(_spec(batch_grid=[0.3, 1, 2]))
    assert spec_lib.parse({**SPEC, "tune": {}}).tune.peak_lrs(1.0) == spec_lib.DEFAULT_LR_GRID


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def _sweep_spec(tmp_path, corpus, **changes) -> spec_lib.Spec:
    """SPEC on the test corpus, written to tmp_path/spec.yaml."""
    fields = {**{k: SPEC[k] for k in ("shapes", "eval", "tune")}, **changes}
    return spec_lib.load(write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", **fields))


class UCurveLauncher(FakeLauncher):
    """Trains nothing: every run ends with the loss `u_curve` gives its config."""

    def __init__(self, lr_opt=TRUE_LR):
        super().__init__()
        self.lr_opt = lr_opt

    def wait(self, timeout=None):
        job, _ = super().wait(timeout)
        loss = u_curve(config_lib.from_dict(job.config), lr_opt=self.lr_opt)
        return job, dataclasses.replace(FAKE, final_val_loss=loss)


def test_the_driver_runs_the_tune_stage_first_then_the_main_runs_at_its_fit_and_a_rerun_trains_nothing(
    tmp_path, corpus, capsys
):
    spec, out = _sweep_spec(tmp_path, corpus), tmp_path / "out"
    path = str(tmp_path / "spec.yaml")
    tune_runs = plan_lib.resolve_tune(spec)
    launcher, lines = UCurveLauncher(), []
    outcome = runner.run_sweep(spec, out, launcher, progress=False, log=lines.append)
    assert launcher.ran[:15] == [r.run_id for r in tune_runs] and len(launcher.ran) == 18
    saved = json.loads((out / tune.FILE).read_text())
    assert (saved["lr_rule"]["k"], saved["lr_rule"]["p"]) == pytest.approx((TRUE_LR.k, TRUE_LR.p), rel=1e-6)
    assert saved["runs"] == [r.run_id for r in tune_runs] and all(s["identified"] for s in saved["shapes"])
    main_jobs = launcher.jobs[15:]
    for job in main_jobs:  # the main runs at LR*(N), not at rules.lr
        cfg = config_lib.from_dict(job.config)
        assert cfg.train.optimizer.peak_lr == float(f"{TRUE_LR(_n(cfg)):.3g}")
    assert (outcome.finished, outcome.failed, outcome.tune_pending) == (18, 0, False)
    assert "tune stage: LR*(N) = " in lines[-1] and "from 3 of 3 sizes" in lines[-1]
    # The fitter sees the main runs only.
    assert sorted(o.run_id for o in observations(out)) == sorted(j.run_id for j in main_jobs)
    kinds = sqlite3.connect(out / FILE).execute("SELECT kind, COUNT(*) FROM runs GROUP BY kind").fetchall()
    assert sorted(kinds) == [("run", 3), ("tune", 15)]

    (out / tune.FILE).unlink()  # refitted from the store, the same
    again = UCurveLauncher()
    outcome = runner.run_sweep(spec, out, again, progress=False, log=lambda *_: None)
    assert again.ran == [] and (outcome.finished, outcome.skipped) == (0, 18)
    assert json.loads((out / tune.FILE).read_text()) == saved

    # The dry run now lists the main runs at the fitted LR, the tune runs apart, and says so.
    capsys.readouterr()
    assert main(["sweep", "run", path, "--out", str(out), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["main_lr"].startswith("tuned: LR*(N) = ")
    assert [r["id"] for r in plan["runs"] if r["stage"] == "main"] == [j.run_id for j in main_jobs]
    assert main(["sweep", "run", path, "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.index("tune stage, first") < text.index(tune_runs[-1].run_id) < text.index("main runs (tuned")


def test_before_the_tune_stage_has_run_the_dry_run_marks_the_main_runs_provisional(tmp_path, corpus, capsys):
    _sweep_spec(tmp_path, corpus)
    assert main(["sweep", "run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "18 runs" in text and ", 15 tune runs " in text
    assert "main runs (rules.lr until the tune stage has run: provisional" in text
    tune_lines = text[text.index("tune stage, first") : text.index("main runs (")].splitlines()[2:]
    assert len(tune_lines) == 15 and all(line.rstrip().endswith("tune") for line in tune_lines)


def test_a_tune_stage_with_no_bracketed_minimum_stops_before_the_main_runs(tmp_path, corpus):
    launcher, lines = UCurveLauncher(lr_opt=lambda n: 1e3), []
    with pytest.raises(ConfigError, match="identified no size's LR"):
        runner.run_sweep(_sweep_spec(tmp_path, corpus), tmp_path / "out", launcher, progress=False, log=lines.append)
    assert len(launcher.ran) == 15
    assert lines[0].startswith("tune: 16x1 (N=1.02e+04) is not identified, left out of LR*(N): lowest loss at the")
    saved = json.loads((tmp_path / "out" / tune.FILE).read_text())
    assert saved["lr_rule"] is None and not any(s["identified"] for s in saved["shapes"])


def test_a_main_run_that_is_also_a_tune_point_stays_an_observation(tmp_path):
    spec = _spec()
    tune_runs = plan_lib.resolve_tune(spec)
    main_runs = plan_lib.resolve(spec)  # the rules' LR: the grid's multiplier 1, the same configs
    shared = {r.run_id for r in tune_runs} & {r.run_id for r in main_runs}
    assert shared
    store = Store(tmp_path)
    store.add_plan("t", tune_runs)
    store.add_plan("t", main_runs)
    store.add_plan("t", tune_runs)  # the next invocation plans the tune stage again
    for run_id in shared:
        store.record_result(run_id, FAKE, revision="x")
    store.close()
    assert {o.run_id for o in observations(tmp_path)} == shared


def test_the_report_plots_the_u_curves_and_the_fitted_rule(tmp_path):
    spec = _spec(batch_grid=[0.5, 1, 2, 4])
    runs = plan_lib.resolve_tune(spec)
    losses = {r.run_id: u_curve(r.config, batch_opt=TRUE_BATCH) for r in runs[:-1]}  # the last run failed
    tune.write(tmp_path, tune.fit(spec, runs, losses))
    lines = tune_report.section(tmp_path, tmp_path / "report", plots.pyplot())
    text = "\n".join(lines)
    assert text.startswith("## Tuning") and "**LR*(N) = " in text and "**B*(C) = " in text
    row = next(line for line in lines if line.startswith("| 48x1 | 4.92e+04 | 3.62e+09 | 512 |"))
    assert f"| {runs[-1].config.train.optimizer.peak_lr:.3g} |" in row  # the failed LR, named in its curve's row
    for name in tune_report.PLOTS:
        assert f"![{name}]({name}.png)" in text and (tmp_path / "report" / f"{name}.png").stat().st_size > 0
    assert tune_report.section(tmp_path / "none", tmp_path, plots.pyplot()) == []


def test_sweep_fit_s_report_has_the_tuning_section_wherever_it_is_written(tmp_path, corpus):
    spec = _sweep_spec(tmp_path, corpus, budgets=[1.6e8, 3.2e8, 6.4e8])  # 9 main runs: enough to fit
    runner.run_sweep(spec, tmp_path / "out", UCurveLauncher(), progress=False, log=lambda *_: None)
    fitted = tmp_path / "fitted"
    assert main(["sweep", "fit", str(tmp_path / "out"), "--out", str(fitted), "--resamples", "0"]) == 0
    text = (fitted / "report.md").read_text()
    assert "## Tuning" in text and "**LR*(N) = " in text
    assert all((fitted / f"{name}.png").is_file() for name in tune_report.PLOTS)


@pytest.mark.slow
def test_end_to_end_the_main_run_trains_at_the_tuned_lr_and_a_rerun_reuses_the_tune_runs(tmp_path, corpus):
    """One size, three LRs a decade apart (20 steps each), then its main run: the real U-curve's minimum is inside
    the grid, the main run's saved config holds LR*, and a re-run trains nothing."""
    path = write_spec(
        tmp_path / "spec.yaml",
        corpus,
        tmp_path / "cache",
        tune={"flops": 1.6e8, "lrs": [0.01, 0.1, 1.0]},
    )
    spec, out = spec_lib.load(path), tmp_path / "out"
    quiet = {"progress": False, "log": lambda *_: None, "compile_cache": True}  # runs share init and eval programs
    outcome = runner.run_sweep(spec, out, LocalLauncher(), **quiet)
    assert (outcome.finished, outcome.failed) == (4, 0)
    saved = json.loads((out / tune.FILE).read_text())
    (shape,) = saved["shapes"]
    assert shape["identified"] and 0.01 < shape["lr_opt"] < 1.0, shape
    (main_run,) = plan_lib.resolve(spec, tune.fit_stage(spec, plan_lib.resolve_tune(spec), Store(out)).rules)
    cfg = config_lib.load(out / runner.RUNS / main_run.run_id / CONFIG)
    assert cfg.train.optimizer.peak_lr == float(f"{shape['lr_opt']:.3g}")  # one size: LR*(N) at N is LR*
    outcome = runner.run_sweep(spec, out, LocalLauncher(), **quiet)
    assert (outcome.finished, outcome.skipped) == (0, 4)
    for run_id in saved["runs"]:  # each tune run trained once
        assert (out / runner.RUNS / run_id / "sweep.log").read_text().count("attempt") == 1
