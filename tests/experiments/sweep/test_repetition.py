"""Repeated data: Muennighoff et al.'s effective D against the figures their paper quotes, and a fit on runs that
repeat data recovering the law that fresh data follows, which a fit at the tokens read does not."""

import dataclasses

import numpy as np
import pytest

from meshlm.experiments.sweep.fit import fit
from meshlm.experiments.sweep.repetition import effective_tokens
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep


@pytest.mark.parametrize("epochs, worth", [(2, 0.984), (4, 0.931), (8, 0.828), (16, 0.661), (40, 0.379)])
def test_effective_tokens_match_the_papers_value_of_repeated_data(epochs, worth):
    # Muennighoff et al. (2023), what D' / D is at each number of epochs (shared/reference, section 4)
    U = 3e9
    assert effective_tokens(epochs * U, U) / (epochs * U) == pytest.approx(worth, abs=6e-4)


def test_effective_tokens_never_pass_the_bound_and_leave_single_epochs_alone():
    U = 1e6
    D = np.array([1e5, 1e6, 1e9, 1e12])
    worth = effective_tokens(D, U)
    assert list(worth[:2]) == [1e5, 1e6]  # one epoch or less: every token is fresh
    assert np.all(worth <= (1 + 15.388) * U * (1 + 1e-12)) and worth[-1] == pytest.approx((1 + 15.388) * U)
    assert list(effective_tokens(D, None)) == list(D)  # the split's size unknown: D as read
    assert list(effective_tokens(D, [np.nan] * 4)) == list(D)


def test_a_fit_on_runs_that_repeat_data_recovers_the_fresh_data_law():
    # The sweep's world: losses follow HOFFMANN at the effective D, on a split that the larger budgets' small models
    # read up to ~12 times. Fitted at D', the law is recovered; fitted at the tokens read, it is not.
    budgets = np.logspace(18, 20, 5)
    fresh = isoflop_sweep(HOFFMANN, budgets, sizes_per_budget=7)
    U = 2e9
    runs = [
        dataclasses.replace(o, loss=float(HOFFMANN.loss(o.N, effective_tokens(o.D, U))), unique_tokens=U) for o in fresh
    ]
    repeated = [o for o in runs if o.epochs > 1]
    assert len(repeated) >= 8 and max(o.epochs for o in repeated) > 10
    effective = fit(runs, resamples=0, starts=16)
    raw = fit(runs, resamples=0, starts=16, effective_data=False)
    for name in ("alpha", "beta", "E"):
        assert effective.values[name] == pytest.approx(getattr(HOFFMANN, name), rel=2e-3)
    assert abs(raw.values["beta"] - HOFFMANN.beta) > 0.02
    assert effective.epochs == {o.run_id: o.epochs for o in repeated}
    assert effective.to_json()["repeated_data"]["effective_data"] is True


def test_a_holdout_that_repeats_data_is_predicted_at_its_effective_d():
    runs = isoflop_sweep(HOFFMANN, np.logspace(18, 20, 3), sizes_per_budget=7)
    U = 5e9
    n = 3e8
    d = 6 * U  # six epochs
    held = dataclasses.replace(runs[0], N=n, D=d, C=6 * n * d, holdout=True, run_id="held", unique_tokens=U)
    held = dataclasses.replace(held, loss=float(HOFFMANN.loss(n, effective_tokens(d, U))))
    (h,) = fit(runs + [held], resamples=0, starts=16).holdout
    assert h.D == d and h.D_effective == pytest.approx(float(effective_tokens(d, U)))
    assert abs(h.relative_error) < 1e-3
    (h_raw,) = fit(runs + [held], resamples=0, starts=16, effective_data=False).holdout
    assert h_raw.D_effective == d and h_raw.relative_error < -5e-3  # counted as fresh data it is predicted too low
