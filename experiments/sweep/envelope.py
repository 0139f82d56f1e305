"""Approach 1 (Hoffmann et al. 2022): the lower envelope of loss against compute over every run's loss curve.

Each curve point (tokens seen t, loss) of a run with F FLOPs per token sits at compute F t. On a grid of compute
values, each curve is interpolated (loss against log compute) where it has data, and the run with the lowest loss
there is the compute-optimal one: its N, and D = C / F, give one (C, N_opt, D_opt) point. Power laws through those
points give N_opt ~ C^a and D_opt ~ C^b.

Only valid when intermediate points are as good as a run stopped there: Chinchilla trained each size with several
cosine lengths; with one cosine per run, mid-run losses are above what a run of that length would reach. Cooldown
branches give exactly such points (Hägele et al. 2024): the branches of one trunk make one curve of their final
losses, in place of their own mid-decay points.
"""

import collections
import dataclasses

import numpy as np

from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.powerlaw import PowerLaw, fit_power_law

GRID_POINTS = 40


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    C: tuple[float, ...]
    N_opt: tuple[float, ...]
    D_opt: tuple[float, ...]
    loss: tuple[float, ...]
    n_law: PowerLaw | None
    d_law: PowerLaw | None


def curves_of(runs: list[Observation]) -> list[tuple[float, float, list[float], list[float]]]:
    """fit_envelope's curves: each run's validation points, or one curve of end points per cooldown trunk."""
    curves, families = [], collections.defaultdict(list)
    for r in runs:
        if r.trunk:
            families[r.trunk].append(r)
        elif r.curve:
            curves.append((r.N, r.flops_per_token, [t for t, _ in r.curve], [v for _, v in r.curve]))
    for branches in families.values():
        branches.sort(key=lambda r: r.D)
        curves.append((branches[0].N, branches[0].flops_per_token, [r.D for r in branches], [r.loss for r in branches]))
    return curves


def fit_envelope(curves: list[tuple[float, float, np.ndarray, np.ndarray]]) -> EnvelopeFit | None:
    """curves: (N, FLOPs per token, tokens seen, loss) per run. None when fewer than two runs have curves."""
    curves = [(n, f, np.asarray(t, float), np.asarray(v, float)) for n, f, t, v in curves if len(t) >= 2]
    if len(curves) < 2:
        return None
    log_c = [np.log(f * t) for _, f, t, _ in curves]
    grid = np.linspace(min(c.min() for c in log_c), max(c.max() for c in log_c), GRID_POINTS)
    points, inner = [], []
    for g in grid:
        present = [
            (float(np.interp(g, lc, loss)), n, f) for (n, f, _, loss), lc in zip(curves, log_c) if lc[0] <= g <= lc[-1]
        ]
        if not present:
            continue
        value, n, f = min(present)
        c = float(np.exp(g))
        points.append((c, n, c / f, value))
        # Where the smallest or largest size present at this compute wins, the optimum may lie beyond it: such
        # points are shown but not fitted (the same rule as Approach 2's edge flag).
        sizes = [m for _, m, _ in present]
        inner.append(min(sizes) < n < max(sizes))
    cs, ns, ds, ls = (tuple(v) for v in zip(*points))
    fit_c = [c for c, keep in zip(cs, inner) if keep]
    n_law = fit_power_law(fit_c, [n for n, keep in zip(ns, inner) if keep]) if fit_c else None
    d_law = fit_power_law(fit_c, [d for d, keep in zip(ds, inner) if keep]) if fit_c else None
    return EnvelopeFit(C=cs, N_opt=ns, D_opt=ds, loss=ls, n_law=n_law, d_law=d_law)
