"""Approach 3: the objective, the closed forms, and recovery of a known law from noisy IsoFLOP points."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from meshlm.experiments.sweep import parametric
from meshlm.experiments.sweep.parametric import LossLaw, fit_parametric
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep

EPOCH = LossLaw(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)


@pytest.mark.parametrize("law", [HOFFMANN, EPOCH])
@pytest.mark.parametrize("C", [1e18, 5.76e23])
def test_closed_forms_satisfy_the_constraint_and_minimise_the_loss(law, C):
    n, d = float(law.n_opt(C)), float(law.d_opt(C))
    assert 6 * n * d == pytest.approx(C, rel=1e-12)
    # the optimum found numerically along 6 N D = C, independent of the closed form
    best = minimize_scalar(lambda x: law.loss(math.exp(x), C / (6 * math.exp(x))), bounds=(0, 60), method="bounded")
    assert math.exp(best.x) == pytest.approx(n, rel=1e-3)
    assert float(law.l_opt(C)) == pytest.approx(best.fun, rel=1e-9)
    assert float(law.tokens_per_param(C)) == pytest.approx(d / n, rel=1e-12)


def test_derived_exponents():
    law = HOFFMANN
    assert law.a == pytest.approx(0.28 / 0.62) and law.b == pytest.approx(0.34 / 0.62)
    assert law.a + law.b == pytest.approx(1.0)
    # N_opt grows by 10^a per decade of compute, D_opt by 10^b
    assert float(law.n_opt(1e21) / law.n_opt(1e20)) == pytest.approx(10**law.a)
    assert float(law.d_opt(1e21) / law.d_opt(1e20)) == pytest.approx(10**law.b)


def test_epoch_refit_gives_about_20_tokens_per_parameter():
    # Besiroglu et al. 2024: their refit is "compatible with ~20 tokens per parameter" (18-25 over 1e19-1e24)
    assert 17 < float(EPOCH.tokens_per_param(5.76e23)) < 26


def test_objective_is_the_summed_huber_of_log_residuals_and_its_gradient_is_exact():
    rng = np.random.default_rng(1)
    N, D = 10 ** rng.uniform(7, 10, 20), 10 ** rng.uniform(9, 12, 20)
    loss = HOFFMANN.loss(N, D) * np.exp(rng.normal(0, 0.01, 20))
    theta = np.array([6.0, 6.1, 0.5, 0.3, 0.3])
    args = (np.log(N), np.log(D), np.log(loss), 1e-3)
    value, grad = parametric._objective(theta, *args)
    pred = np.log(np.exp(6.0) / N**0.3 + np.exp(6.1) / D**0.3 + np.exp(0.5))
    r = np.abs(pred - np.log(loss))
    assert value == pytest.approx(np.sum(np.where(r <= 1e-3, 0.5 * r**2, 1e-3 * (r - 0.5e-3))), rel=1e-12)
    step = 1e-6
    numeric = [
        (parametric._objective(theta + step * e, *args)[0] - parametric._objective(theta - step * e, *args)[0])
        / (2 * step)
        for e in np.eye(5)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_recovers_a_known_law_from_noisy_isoflop_points():
    obs = isoflop_sweep(HOFFMANN, np.logspace(18, 22, 5), noise=0.005)
    result = fit_parametric([o.N for o in obs], [o.D for o in obs], [o.loss for o in obs], starts=16)
    assert result.converged
    assert abs(result.law.alpha - HOFFMANN.alpha) < 0.02
    assert abs(result.law.beta - HOFFMANN.beta) < 0.02
    assert abs(result.law.a - HOFFMANN.a) < 0.02
    assert result.law.E == pytest.approx(HOFFMANN.E, rel=0.02)


def test_exact_points_give_the_law_back():
    obs = isoflop_sweep(EPOCH, np.logspace(18, 21, 4), sizes_per_budget=7)
    law = fit_parametric([o.N for o in obs], [o.D for o in obs], [o.loss for o in obs], starts=16).law
    for name in ("E", "alpha", "beta"):
        assert getattr(law, name) == pytest.approx(getattr(EPOCH, name), rel=1e-3)


@pytest.mark.parametrize("free", ["alpha", "A", "beta", "B"])
def test_a_term_that_does_not_fall_has_no_finite_optimum(free):
    # A fit can end with beta (or B, alpha, A) at 0: the loss then never rewards that side, so no finite split of
    # the compute is optimal. The closed forms are NaN (not identified), never a ZeroDivisionError.
    law = dataclasses.replace(HOFFMANN, **{free: 0.0})
    assert math.isnan(law.G) and math.isnan(float(law.n_opt(1e21))) and math.isnan(float(law.l_opt(1e21)))
    assert not math.isnan(float(law.loss(1e9, 1e11)))
