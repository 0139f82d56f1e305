"""Straight lines in log-log space: y = k x^p, fitted by least squares on (log x, log y)."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    k: float
    p: float

    def __call__(self, x):
        return self.k * np.power(np.asarray(x, dtype=float), self.p)


def fit_power_law(x, y) -> PowerLaw | None:
    """None when fewer than two distinct x values make the line undetermined."""
    logx, logy = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if len(np.unique(logx)) < 2:
        return None
    p, logk = np.polyfit(logx, logy, 1)
    return PowerLaw(k=float(np.exp(logk)), p=float(p))


def group_by_budget(log_c: np.ndarray, width: float = 0.1) -> list[np.ndarray]:
    """Indices of runs grouped into budgets: walking up the sorted log10 C values, a run joins the current group
    while it lies within `width` decades of the group's smallest C (budgets read off a plot scatter by a few
    percent around the nominal value; a fixed window, unlike chaining neighbours, cannot merge a dense cloud)."""
    order = np.argsort(log_c, kind="stable")
    groups, current = [], [order[0]]
    for i in order[1:]:
        if log_c[i] - log_c[current[0]] > width:
            groups.append(np.array(current))
            current = []
        current.append(i)
    groups.append(np.array(current))
    return groups
