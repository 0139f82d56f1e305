"""Validation of a fit: the leave-one-budget-out refit never sees the budget it predicts, and the coverage counts
every prediction inside its 80 % interval."""

import dataclasses

import numpy as np
import pytest

from meshlm.experiments.sweep.fit import fit
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.validation import validate
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep

BUDGETS = np.logspace(18, 21, 4)
ARGS = {"resamples": 20, "seed": 0, "starts": 8}


def _sweep(**kwargs):
    return isoflop_sweep(HOFFMANN, BUDGETS, sizes_per_budget=7, **kwargs)


def test_the_largest_budget_is_predicted_by_a_law_fitted_without_it():
    # The largest budget's losses are 10 % too high. A refit that saw them would bend towards them; one fitted on
    # the other budgets predicts the true law there: every relative error is 1/1.1 - 1, and none is inside.
    runs = [dataclasses.replace(o, loss=o.loss * 1.1) if o.budget == BUDGETS[-1] else o for o in _sweep()]
    held = Observation(N=1e10, D=2e11, loss=float(HOFFMANN.loss(1e10, 2e11)), holdout=True, run_id="held")
    result = fit(runs + [held], **ARGS)
    validation = validate(runs + [held], result, **ARGS)
    assert validation.left_out_budget == BUDGETS[-1]
    assert len(validation.left_out) == 7
    for p in validation.left_out:
        assert p.relative_error == pytest.approx(1 / 1.1 - 1, abs=2e-3)
        assert p.predicted == pytest.approx(float(HOFFMANN.loss(p.N, p.D)), rel=2e-3)
        assert not p.inside80
    # The spec's hold-out comes from the full fit, unchanged.
    assert validation.held_out == result.holdout
    inside = [p.inside80 for p in validation.predictions]
    assert len(inside) == 8 and validation.coverage80 == sum(inside) / 8
    summary = validation.to_json()
    assert summary["predicted"] == 8 and summary["coverage80"] == validation.coverage80


def test_no_refit_without_a_second_budget_or_enough_runs_below_the_largest():
    one_budget = isoflop_sweep(HOFFMANN, [1e20], sizes_per_budget=8)
    v = validate(one_budget, fit(one_budget, **ARGS), **ARGS)
    assert v.left_out_budget is None and "one fitted budget" in v.skipped and np.isnan(v.coverage80)
    few_below = isoflop_sweep(HOFFMANN, [1e19], sizes_per_budget=4) + isoflop_sweep(
        HOFFMANN, [1e20], sizes_per_budget=8
    )
    v = validate(few_below, fit(few_below, **ARGS), **ARGS)
    assert v.left_out_budget is None and "4 runs below the largest budget" in v.skipped
