"""Does the law predict runs it was not fitted on? The spec's hold-outs, plus a leave-one-budget-out refit: the law
fitted without the largest fitted budget predicts that budget's runs. Their 80 % intervals should hold about 80 % of
the actual losses; the coverage over all of them says whether the intervals can be trusted."""

import dataclasses

import numpy as np

from meshlm.experiments.sweep import fit as fit_lib
from meshlm.experiments.sweep import powerlaw
from meshlm.experiments.sweep.observations import Observation


@dataclasses.dataclass(frozen=True)
class Validation:
    held_out: tuple[fit_lib.HoldoutPrediction, ...]  # the spec's hold-out runs, predicted by the full fit
    left_out_budget: float | None  # the fitted budget the refit left out (None: no refit)
    left_out: tuple[fit_lib.HoldoutPrediction, ...]  # its runs, predicted by the refit
    skipped: str = ""  # why there is no refit

    @property
    def predictions(self) -> tuple[fit_lib.HoldoutPrediction, ...]:
        return self.held_out + self.left_out

    @property
    def coverage80(self) -> float:
        """The fraction of predicted runs inside their 80 % interval (NaN when none)."""
        inside = [p.inside80 for p in self.predictions]
        return sum(inside) / len(inside) if inside else float("nan")

    def to_json(self) -> dict:
        def rows(predictions):
            return [
                {**dataclasses.asdict(p), "relative_error": p.relative_error, "inside80": p.inside80}
                for p in predictions
            ]

        return fit_lib.nan_to_none(
            {
                "held_out": rows(self.held_out),
                "left_out_budget": self.left_out_budget,
                "left_out": rows(self.left_out),
                "skipped": self.skipped,
                "coverage80": self.coverage80,
                "predicted": len(self.predictions),
            }
        )


def _largest_budget(fitted: list[Observation]) -> tuple[list[Observation], float, int]:
    """(the runs of the largest budget, its compute, how many budgets): by nominal budget where the runs name one,
    else grouped by compute as Approach 2 groups them (a table of N, D and loss alone)."""
    if all(o.budget for o in fitted):
        budgets = sorted({o.budget for o in fitted})
        return [o for o in fitted if o.budget == budgets[-1]], budgets[-1], len(budgets)
    groups = powerlaw.group_by_budget(np.log10([o.compute for o in fitted]))
    top = [fitted[i] for i in groups[-1]]
    return top, float(np.exp(np.mean(np.log([o.compute for o in top])))), len(groups)


def validate(observations: list[Observation], result: fit_lib.FitResult, **fit_args) -> Validation:
    """`result` is the fit of `observations`; `fit_args` (resamples, seed, starts) are the refit's, as the fit's."""
    fitted = [o for o in observations if not o.holdout]
    top, largest, count = _largest_budget(fitted)
    if count < 2:
        return Validation(result.holdout, None, (), "one fitted budget: nothing to leave out")
    rest = [o for o in fitted if o not in top]
    if len(rest) < fit_lib.MIN_RUNS:
        why = f"{len(rest)} runs below the largest budget, fewer than the {fit_lib.MIN_RUNS} a fit needs"
        return Validation(result.holdout, None, (), why)
    refit = fit_lib.fit(rest + [dataclasses.replace(o, holdout=True) for o in top], **fit_args)
    return Validation(result.holdout, largest, refit.holdout)
