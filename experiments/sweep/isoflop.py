"""Approach 2 (Hoffmann et al. 2022): per compute budget, a parabola in log N through the final losses; its minimum
gives N_opt(C); power laws through the minima give N_opt ~ C^a and D_opt ~ C^b.

A budget is flagged and left out when its minimum is not bracketed: the lowest observed loss is at the smallest or
largest size of its grid, the parabola opens downwards, or its vertex lies outside the grid. An unbracketed minimum
is an extrapolation of a parabola that the data do not constrain there.
"""

import dataclasses

import numpy as np

from meshlm.experiments.sweep import parabola
from meshlm.experiments.sweep.powerlaw import PowerLaw, fit_power_law, group_by_budget


@dataclasses.dataclass(frozen=True)
class BudgetFit:
    C: float
    N: tuple[float, ...]  # the budget's runs
    loss: tuple[float, ...]
    sizes: int
    coeffs: tuple[float, float, float] | None  # loss = c0 x^2 + c1 x + c2 with x = ln N
    N_opt: float | None
    D_opt: float | None
    L_opt: float | None
    flag: str  # empty when the budget is used; otherwise why it was left out


@dataclasses.dataclass(frozen=True)
class IsoflopFit:
    budgets: tuple[BudgetFit, ...]
    n_law: PowerLaw | None
    d_law: PowerLaw | None

    @property
    def used(self) -> tuple[BudgetFit, ...]:
        return tuple(b for b in self.budgets if not b.flag)


def _budget_fit(C: float, N: np.ndarray, loss: np.ndarray) -> BudgetFit:
    v = parabola.vertex(np.log(N), loss, what="size")
    runs = dict(C=C, N=tuple(map(float, N)), loss=tuple(map(float, loss)), sizes=len(np.unique(np.log(N))))
    if v.flag:
        return BudgetFit(**runs, coeffs=v.coeffs, N_opt=None, D_opt=None, L_opt=None, flag=v.flag)
    n_opt = float(np.exp(v.x))
    return BudgetFit(**runs, coeffs=v.coeffs, N_opt=n_opt, D_opt=C / (6.0 * n_opt), L_opt=v.y, flag="")


def fit_isoflop(N, D, loss, C, budget=None) -> IsoflopFit:
    """budget: the nominal budget of each run (None or NaN: group runs by C instead)."""
    N, D, loss, C = (np.asarray(v, dtype=float) for v in (N, D, loss, C))
    nominal = np.full(len(N), np.nan) if budget is None else np.asarray(budget, dtype=float)
    fits = []
    named = ~np.isnan(nominal)
    for value in np.unique(nominal[named]):
        idx = np.flatnonzero(nominal == value)
        fits.append(_budget_fit(float(value), N[idx], loss[idx]))
    rest = np.flatnonzero(~named)
    if len(rest):
        for group in group_by_budget(np.log10(C[rest])):
            idx = rest[group]
            fits.append(_budget_fit(float(np.exp(np.log(C[idx]).mean())), N[idx], loss[idx]))
    fits.sort(key=lambda b: b.C)
    used = [b for b in fits if not b.flag]
    cs = [b.C for b in used]
    n_law = fit_power_law(cs, [b.N_opt for b in used]) if len(used) >= 2 else None
    d_law = fit_power_law(cs, [b.D_opt for b in used]) if len(used) >= 2 else None
    return IsoflopFit(budgets=tuple(fits), n_law=n_law, d_law=d_law)
