"""Synthetic sweeps drawn from a known law, for the fitter's tests."""

import numpy as np

from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.parametric import LossLaw

HOFFMANN = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def isoflop_sweep(
    law: LossLaw, budgets, sizes_per_budget: int = 9, span: float = 1.0, noise: float = 0.0, seed: int = 0
) -> list[Observation]:
    """Per budget, sizes log-spaced over +-span decades around the law's own N_opt; log-normal noise on the loss."""
    rng = np.random.default_rng(seed)
    out = []
    for C in budgets:
        for n in law.n_opt(C) * np.logspace(-span, span, sizes_per_budget):
            d = C / (6 * n)
            loss = float(law.loss(n, d) * np.exp(rng.normal(0.0, noise)))
            out.append(Observation(N=float(n), D=float(d), loss=loss, budget=float(C)))
    return out
