"""Approach 3 (Hoffmann et al. 2022): L(N, D) = E + A/N^alpha + B/D^beta, and its compute-optimal closed forms.

The fit follows Hoffmann's recipe as Besiroglu et al. (2024) reproduced it: the log-sum-exp form
log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e; a Huber loss (delta 1e-3) on log
loss, SUMMED over runs (averaging makes the objective so small that L-BFGS stops early, the failure Besiroglu
found in the original fit); L-BFGS from a grid of initialisations; the best converged solution is kept.
"""

import dataclasses
import itertools
import math

import numpy as np

HUBER_DELTA = 1e-3
# Hoffmann's initialisation grid (Epoch's code): 5 x 5 x 5 x 6 x 6 = 4500 starts.
GRID_ALPHA = GRID_BETA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = GRID_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
# Every grid point is scored, and L-BFGS runs from the best few: a full L-BFGS from all 4500 costs about a minute
# of CPU per fit, which the bootstrap would multiply by hundreds; the best-scoring starts reach the same optimum.
DEFAULT_STARTS = 64


@dataclasses.dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N, D):
        return self.E + self.A / np.power(N, self.alpha) + self.B / np.power(D, self.beta)

    @property
    def a(self) -> float:
        """N_opt grows as C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt grows as C^b; a + b = 1."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """NaN where a term does not fall (alpha, A, beta or B at 0, as a fit at its bounds can end): then no finite
        size is optimal, and N_opt, D_opt and L_opt are not defined."""
        if min(self.alpha * self.A, self.beta * self.B) <= 0:
            return math.nan
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def n_opt(self, C):
        """The N that minimises L on the constraint 6 N D = C."""
        return self.G * np.power(np.asarray(C, dtype=float) / 6.0, self.a)

    def d_opt(self, C):
        return np.power(np.asarray(C, dtype=float) / 6.0, self.b) / self.G

    def tokens_per_param(self, C):
        return self.d_opt(C) / self.n_opt(C)

    def l_opt(self, C):
        return self.loss(self.n_opt(C), self.d_opt(C))


@dataclasses.dataclass(frozen=True)
class ParametricFit:
    law: LossLaw
    objective: float
    converged: bool
    starts: int


def _objective(theta, logN, logD, logL, delta):
    """Summed Huber loss of the log-sum-exp prediction of log L, and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    top = u.max(axis=0)
    w = np.exp(u - top)
    total = w.sum(axis=0)
    r = top + np.log(total) - logL
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum()
    dr = np.where(small, r, delta * np.sign(r)) / total  # dHuber/dr times the softmax normaliser
    ga, gb, ge = (dr * w).sum(axis=1)
    grad = np.array([ga, gb, ge, -(dr * w[0] * logN).sum(), -(dr * w[1] * logD).sum()])
    return value, grad


def _grid_scores(grid, logN, logD, logL, delta):
    """The objective at every grid point at once (the grid has 4500 rows)."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    u = np.stack(np.broadcast_arrays(a - alpha * logN, b - beta * logD, e))
    r = np.logaddexp.reduce(u, axis=0) - logL
    return np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)


def initial_grid() -> np.ndarray:
    return np.array(list(itertools.product(GRID_A, GRID_B, GRID_E, GRID_ALPHA, GRID_BETA)))


# log A, log B, log E, alpha, beta
THETA_BOUNDS = ((-50.0, 200.0), (-50.0, 200.0), (-20.0, 20.0), (0.0, 10.0), (0.0, 10.0))
LOG_FITTED = ("A", "B", "E")
# The same box in each parameter's own scale, for telling whether a fit ended against it.
BOUNDS = {
    name: tuple(math.exp(v) for v in box) if name in LOG_FITTED else box
    for name, box in zip(("A", "B", "E", "alpha", "beta"), THETA_BOUNDS)
}


def term_shares(law: LossLaw, N, D) -> dict[str, float]:
    """For E, A and B: the largest part of the predicted loss their term (E, A/N^alpha, B/D^beta) makes at any run."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    total = law.loss(N, D)
    terms = {"E": np.full_like(N, law.E), "A": law.A / np.power(N, law.alpha), "B": law.B / np.power(D, law.beta)}
    return {name: float(np.max(term / total)) for name, term in terms.items()}


def single_threaded():
    """A context in which BLAS runs on one thread: L-BFGS on five parameters gains nothing from threads, and on a
    busy machine their spinning made each iteration ~30x slower. scipy is imported first because threadpoolctl
    only limits libraries already loaded."""
    import scipy.optimize  # noqa: F401  (deferred: scipy is heavy and only the fitter needs it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _minimize(theta0, args):
    from scipy.optimize import minimize

    # Tight tolerances: the summed Huber loss is ~1e-3 at the optimum and the default ftol would stop short.
    # Loose bounds keep a degenerate resample (few points, a flat direction) from running log A or log B off to
    # values whose exp overflows; any fit that reaches them is degenerate anyway.
    return minimize(
        _objective,
        theta0,
        args=args,
        jac=True,
        method="L-BFGS-B",
        bounds=THETA_BOUNDS,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000, "maxcor": 20},
    )


def fit_parametric(
    N, D, loss, starts: int | None = DEFAULT_STARTS, delta: float = HUBER_DELTA, warm_start: LossLaw | None = None
) -> ParametricFit:
    """Fit L(N, D). L-BFGS runs from the `starts` best-scoring grid points (None: all 4500; 0: none) and from
    warm_start if given (the bootstrap restarts from the full-data optimum)."""
    with single_threaded():
        return _fit(N, D, loss, starts=starts, delta=delta, warm_start=warm_start)


def _fit(N, D, loss, starts: int | None, delta: float, warm_start: LossLaw | None) -> ParametricFit:
    logN, logD, logL = (np.log(np.asarray(v, dtype=float)) for v in (N, D, loss))
    args = (logN, logD, logL, delta)
    grid = initial_grid()
    if starts == 0:
        grid = grid[:0]
    elif starts is not None:
        grid = grid[np.argsort(_grid_scores(grid, *args), kind="stable")[:starts]]
    if warm_start is not None:
        w = warm_start
        grid = np.vstack([[[math.log(w.A), math.log(w.B), math.log(w.E), w.alpha, w.beta]], grid])
    best, best_converged = None, None
    for theta0 in grid:
        result = _minimize(theta0, args)
        if not np.all(np.isfinite(result.x)):
            continue
        if result.success and (best_converged is None or result.fun < best_converged.fun):
            best_converged = result
        if best is None or result.fun < best.fun:
            best = result
    chosen = best_converged if best_converged is not None else best
    a, b, e, alpha, beta = chosen.x
    law = LossLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta))
    return ParametricFit(law=law, objective=float(chosen.fun), converged=best_converged is not None, starts=len(grid))
