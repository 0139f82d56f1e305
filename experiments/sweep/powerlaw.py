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


def group_by_budget(log_c: np.ndarray, gap: float = 0.1) -> list[np.ndarray]:
    """Indices of runs grouped into budgets: sorted log10 C values split wherever neighbours differ by more than
    `gap` decades (budgets read off a plot, like Chinchilla's Fig. 4, scatter by a few percent around the nominal)."""
    order = np.argsort(log_c, kind="stable")
    groups, current = [], [order[0]]
    for prev, i in zip(order[:-1], order[1:]):
        if log_c[i] - log_c[prev] > gap:
            groups.append(np.array(current))
            current = []
        current.append(i)
    groups.append(np.array(current))
    return groups
