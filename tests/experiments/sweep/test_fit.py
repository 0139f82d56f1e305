"""The whole fit: hold-outs left out, seeded bootstrap intervals that cover the truth, Kaplan laws, Approach 1."""

import dataclasses

import numpy as np
import pytest

from meshlm.experiments.sweep import envelope, kaplan
from meshlm.experiments.sweep.fit import fit
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.parametric import LossLaw
from meshlm.model.errors import ConfigError
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep


def _sweep(noise=0.005, seed=0):
    return isoflop_sweep(HOFFMANN, np.logspace(18, 21, 4), sizes_per_budget=7, noise=noise, seed=seed)


def test_holdout_runs_are_left_out_of_every_fit_and_predicted():
    runs = _sweep()
    C = 1e22
    n, d = float(HOFFMANN.n_opt(C)), float(HOFFMANN.d_opt(C))
    # an absurd loss: if it were fitted, every value would move
    held = Observation(N=n, D=d, loss=50.0, holdout=True, run_id="big")
    with_holdout = fit(runs + [held], resamples=3, starts=8)
    without = fit(runs, resamples=3, starts=8)
    shared = {k: v for k, v in with_holdout.values.items() if "@" not in k}
    assert shared == {k: without.values[k] for k in shared}
    assert with_holdout.fitted_runs == len(runs)
    (h,) = with_holdout.holdout
    assert h.run_id == "big" and h.actual == 50.0
    assert h.predicted == pytest.approx(float(with_holdout.law.loss(n, d)))
    assert h.relative_error == pytest.approx((h.predicted - 50.0) / 50.0)
    assert not h.inside80
    assert f"N_opt@{C:.3g}" in with_holdout.values  # derived quantities are given at the hold-out's compute


def test_same_seed_same_numbers_other_seed_other_intervals():
    runs = _sweep()
    a, b = fit(runs, resamples=4, seed=3, starts=8), fit(runs, resamples=4, seed=3, starts=8)
    assert a.values == b.values and a.intervals == b.intervals
    c = fit(runs, resamples=4, seed=4, starts=8)
    assert c.values == a.values and c.intervals != a.intervals


def test_too_few_runs_is_a_one_line_error():
    with pytest.raises(ConfigError, match="needs at least 6"):
        fit(_sweep()[:5])


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_truth():
    # Over independent noisy sweeps, the 95 % intervals of alpha, beta and a contain the true value in most
    # of them (a wrong or collapsed bootstrap, like Hoffmann's width-0.001 interval, would miss nearly always).
    covered = {"alpha": 0, "beta": 0, "a": 0}
    widths = []
    sweeps = 3
    for seed in range(sweeps):
        result = fit(_sweep(noise=0.01, seed=seed), resamples=200, seed=seed, starts=8)
        for name in covered:
            ci = result.intervals[name]
            covered[name] += ci["lo95"] <= getattr(HOFFMANN, name) <= ci["hi95"]
        widths.append(result.intervals["a"]["hi80"] - result.intervals["a"]["lo80"])
    assert all(count >= sweeps - 1 for count in covered.values()), covered
    assert 0.002 < min(widths) and max(widths) < 0.2


def test_kaplan_one_variable_law_is_recovered_from_its_frontier():
    truth = kaplan.OneVariableLaw(E=1.7, scale=8.8e6, exponent=0.3, points=0)
    N = np.logspace(6, 9, 10)
    loss = truth.loss(N)
    # runs above the frontier (too few tokens) must not pull the fit
    law = kaplan.fit_one_variable(np.concatenate([N, N[::2]]), np.concatenate([loss, loss[::2] + 0.5]))
    assert law.points == 10
    assert law.E == pytest.approx(1.7, rel=1e-4)
    assert law.exponent == pytest.approx(0.3, rel=1e-4)
    assert law.scale == pytest.approx(8.8e6, rel=1e-3)


def test_envelope_of_curves_follows_the_compute_optimal_frontier():
    # Curves whose every point is a finished run (as with one cosine per length): loss(t) = L(N, t).
    law = LossLaw(E=1.8, A=400.0, B=400.0, alpha=0.3, beta=0.3)
    curves = []
    for n in np.logspace(6, 8, 25):
        t = np.logspace(5, 11, 80)
        curves.append((n, 6 * n, t, law.loss(n, t)))
    env = envelope.fit_envelope(curves)
    assert env.n_law.p == pytest.approx(law.a, abs=0.03)
    assert env.d_law.p == pytest.approx(law.b, abs=0.03)
    inner = [(c, n) for c, n in zip(env.C, env.N_opt) if 1e14 < c < 1e16]
    assert inner
    for c, n in inner:
        assert n == pytest.approx(float(law.n_opt(c)), rel=0.25)  # sizes are 0.08 decades apart


def test_observation_curves_reach_the_fit():
    law = LossLaw(E=1.8, A=400.0, B=400.0, alpha=0.3, beta=0.3)
    runs = []
    for o in isoflop_sweep(law, [1e16, 1e17], sizes_per_budget=5, span=0.6):
        t = np.linspace(o.D / 10, o.D, 10)
        runs.append(dataclasses.replace(o, curve=tuple(zip(t, law.loss(o.N, t)))))
    result = fit(runs, resamples=0, starts=8)
    assert result.fits.envelope is not None
    assert not np.isnan(result.values["approach1.a"])
