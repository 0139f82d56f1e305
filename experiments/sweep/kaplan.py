"""Kaplan-style one-variable laws L(N) = E + (N_c / N)^alpha_N and L(D) = E + (D_c / D)^alpha_D.

Kaplan et al. (2020) fitted L(N) on converged models and L(D) on large early-stopped ones; a sweep holds neither,
so each is fitted on the frontier of the sweep: the runs with a lower loss than every run with a smaller N (or D).
The constant E is kept (Kaplan's pure power laws drop it), since without it extrapolations are optimistic.
"""

import dataclasses

import numpy as np

MIN_POINTS = 4  # three parameters and one degree of freedom


@dataclasses.dataclass(frozen=True)
class OneVariableLaw:
    E: float
    scale: float  # N_c or D_c
    exponent: float  # alpha_N or alpha_D
    points: int

    def loss(self, x):
        return self.E + np.power(self.scale / np.asarray(x, dtype=float), self.exponent)


def frontier(x, loss) -> tuple[np.ndarray, np.ndarray]:
    """The runs whose loss is below that of every run with a smaller x."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    order = np.lexsort((loss, x))
    keep, best = [], np.inf
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    return x[keep], loss[keep]


def _residuals(theta, logx, logl):
    e, log_scale, exponent = theta
    return np.logaddexp(e, exponent * (log_scale - logx)) - logl


def _jacobian(theta, logx, logl):
    e, log_scale, exponent = theta
    power = exponent * (log_scale - logx)
    w_power = np.exp(power - np.logaddexp(e, power))  # the power-law term's share of the loss
    return np.stack([1.0 - w_power, w_power * exponent, w_power * (log_scale - logx)], axis=1)


def fit_one_variable(x, loss) -> OneVariableLaw | None:
    """Least squares on log loss from a few starts; None when the frontier has fewer than MIN_POINTS runs."""
    from scipy.optimize import least_squares  # deferred: scipy is heavy and only the fitter needs it

    fx, fl = frontier(x, loss)
    if len(fx) < MIN_POINTS:
        return None
    logx, logl = np.log(fx), np.log(fl)
    best = None
    for e0 in (np.log(0.5 * fl.min()), np.log(0.9 * fl.min())):
        for exponent0 in (0.1, 0.5):
            # start where the power-law term equals the gap between the smallest-x loss and E
            gap = max(fl[0] - np.exp(e0), 1e-3)
            log_scale0 = logx[0] + np.log(gap) / exponent0
            result = least_squares(
                _residuals, [e0, log_scale0, exponent0], jac=_jacobian, args=(logx, logl), method="lm"
            )
            if best is None or result.cost < best.cost:
                best = result
    e, log_scale, exponent = best.x
    return OneVariableLaw(E=float(np.exp(e)), scale=float(np.exp(log_scale)), exponent=float(exponent), points=len(fx))
