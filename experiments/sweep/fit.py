"""Fit every scaling law to a sweep's runs, bootstrap their uncertainty, and predict the hold-out runs.

Hold-out runs (Observation.holdout) are never fitted; the report compares their losses with the predictions.
Every fitted and derived quantity lives in one flat dict of name -> value, so the bootstrap treats them alike:
resample the fitted runs with replacement, refit everything (Approach 3 warm-started from the full-data optimum),
and read the 10th/90th (80 %) and 2.5th/97.5th (95 %) percentiles of each name. Each name is then judged
identified or not (identify.py): a fit that converged can still leave a parameter free.

Runs that read their training split more than once enter the D-dependent laws (Approach 3 and L(D)) at their
effective D (repetition.py), unless effective_data=False; Approaches 1 and 2 work in compute and are unchanged.
"""

import dataclasses
import math

import numpy as np

from meshlm.experiments.sweep import envelope, identify, isoflop, kaplan, parametric, repetition
from meshlm.experiments.sweep.observations import Observation
from meshlm.model.errors import ConfigError

MIN_RUNS = 6  # Approach 3 has five parameters
DEFAULT_RESAMPLES = 200
PARAMS = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class HoldoutPrediction:
    run_id: str
    N: float
    D: float
    C: float
    D_effective: float  # the D the law was evaluated at: D, or less for a run that repeated data
    actual: float
    predicted: float
    interval80: tuple[float, float]  # bootstrap laws plus resampled fit residuals: where a new run would land
    param_interval80: tuple[float, float]  # bootstrap laws only: the uncertainty of the law itself

    @property
    def relative_error(self) -> float:
        return (self.predicted - self.actual) / self.actual

    @property
    def inside80(self) -> bool:
        return self.interval80[0] <= self.actual <= self.interval80[1]


@dataclasses.dataclass(frozen=True)
class Fits:
    """Every law fitted once on one set of runs."""

    parametric: parametric.ParametricFit
    isoflop: isoflop.IsoflopFit
    envelope: envelope.EnvelopeFit | None
    loss_vs_n: kaplan.OneVariableLaw | None
    loss_vs_d: kaplan.OneVariableLaw | None


@dataclasses.dataclass(frozen=True)
class FitResult:
    values: dict[str, float]
    intervals: dict[str, dict[str, float]]  # name -> lo80, hi80, lo95, hi95
    not_identified: dict[str, identify.Unidentified]  # the fitted quantities the runs leave free, and why
    samples: dict[str, np.ndarray]  # name -> one value per bootstrap resample (NaN where a fit was not possible)
    fits: Fits
    budgets: tuple[float, ...]  # the compute values at which the derived quantities are given
    holdout: tuple[HoldoutPrediction, ...]
    fitted_runs: int
    resamples: int
    seed: int
    effective_data: bool = True
    epochs: dict[str, float] = dataclasses.field(default_factory=dict)  # run id -> epochs, for runs past one

    @property
    def identified(self) -> dict[str, bool]:
        """Every quantity: false where it is not identified or could not be fitted at all."""
        return {k: not (k in self.not_identified or math.isnan(v)) for k, v in self.values.items()}

    @property
    def law(self) -> parametric.LossLaw:
        return self.fits.parametric.law

    def bootstrap_laws(self) -> list[parametric.LossLaw]:
        return [parametric.LossLaw(**{p: float(self.samples[p][i]) for p in PARAMS}) for i in range(self.resamples)]

    def to_json(self) -> dict:
        """Plain JSON types; quantities that could not be fitted are null."""
        iso = self.fits.isoflop
        return nan_to_none(
            {
                "fitted_runs": self.fitted_runs,
                "resamples": self.resamples,
                "seed": self.seed,
                "huber_delta": parametric.HUBER_DELTA,
                "repeated_data": {
                    "effective_data": self.effective_data,
                    "r_star": repetition.R_D_STAR,
                    "epochs": self.epochs,
                },
                "converged": self.fits.parametric.converged,
                "objective": self.fits.parametric.objective,
                "values": self.values,
                "intervals": self.intervals,
                "identified": self.identified,
                "not_identified": {k: str(u) for k, u in self.not_identified.items()},
                "budgets": list(self.budgets),
                "isoflop_budgets": [dataclasses.asdict(b) for b in iso.budgets],
                "holdout": [
                    {**dataclasses.asdict(h), "relative_error": h.relative_error, "inside80": h.inside80}
                    for h in self.holdout
                ],
            }
        )


def nan_to_none(x):
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _budget_key(C: float) -> str:
    return f"{C:.3g}"


def law_tokens(runs: list[Observation], effective: bool) -> np.ndarray:
    """The D each run enters the D-dependent laws at: its effective D when it repeated data and effective is set."""
    D = np.array([r.D for r in runs], dtype=float)
    if not effective:
        return D
    return repetition.effective_tokens(D, [np.nan if r.unique_tokens is None else r.unique_tokens for r in runs])


def _fit_all(
    runs: list[Observation], starts: int | None, warm_start: parametric.LossLaw | None, effective: bool
) -> Fits:
    N, loss = (np.array([getattr(r, k) for r in runs]) for k in ("N", "loss"))
    D = law_tokens(runs, effective)
    raw_D = np.array([r.D for r in runs], dtype=float)
    C = np.array([r.compute for r in runs])
    budget = np.array([np.nan if r.budget is None else r.budget for r in runs])
    return Fits(
        parametric=parametric.fit_parametric(N, D, loss, starts=starts, warm_start=warm_start),
        isoflop=isoflop.fit_isoflop(N, raw_D, loss, C, budget),
        envelope=envelope.fit_envelope(envelope.curves_of(runs)),
        loss_vs_n=kaplan.fit_one_variable(N, loss),
        loss_vs_d=kaplan.fit_one_variable(D, loss),
    )


def _values(fits: Fits, budgets: tuple[float, ...]) -> dict[str, float]:
    law = fits.parametric.law
    out = {p: getattr(law, p) for p in PARAMS} | {"a": law.a, "b": law.b, "G": law.G}
    for name, approach in (("approach2", fits.isoflop), ("approach1", fits.envelope)):
        n_law = approach.n_law if approach is not None else None
        d_law = approach.d_law if approach is not None else None
        out[f"{name}.a"] = n_law.p if n_law else np.nan
        out[f"{name}.b"] = d_law.p if d_law else np.nan
    for suffix, one in (("N", fits.loss_vs_n), ("D", fits.loss_vs_d)):
        out[f"kaplan.E_{suffix}"] = one.E if one else np.nan
        out[f"kaplan.{suffix}_c"] = one.scale if one else np.nan
        out[f"kaplan.alpha_{suffix}"] = one.exponent if one else np.nan
    for C in budgets:
        k = _budget_key(C)
        out[f"N_opt@{k}"] = float(law.n_opt(C))
        out[f"D_opt@{k}"] = float(law.d_opt(C))
        out[f"tokens_per_param@{k}"] = float(law.tokens_per_param(C))
        out[f"L_opt@{k}"] = float(law.l_opt(C))
    return {k: float(v) for k, v in out.items()}


def _interval(samples: np.ndarray) -> dict[str, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return {"lo80": np.nan, "hi80": np.nan, "lo95": np.nan, "hi95": np.nan}
    lo80, hi80, lo95, hi95 = np.percentile(finite, [10, 90, 2.5, 97.5])
    return {"lo80": float(lo80), "hi80": float(hi80), "lo95": float(lo95), "hi95": float(hi95)}


def _predict_holdout(
    runs: list[Observation], laws: list[parametric.LossLaw], law, residuals: np.ndarray, rng, effective: bool
) -> tuple[HoldoutPrediction, ...]:
    out = []
    for r, D in zip(runs, law_tokens(runs, effective)):
        boot = np.array([w.loss(r.N, D) for w in laws] or [np.nan])
        noisy = boot * np.exp(rng.choice(residuals, size=len(boot)))
        out.append(
            HoldoutPrediction(
                run_id=r.run_id,
                N=r.N,
                D=r.D,
                C=r.compute,
                D_effective=float(D),
                actual=r.loss,
                predicted=float(law.loss(r.N, D)),
                interval80=tuple(float(v) for v in np.percentile(noisy, [10, 90])),
                param_interval80=tuple(float(v) for v in np.percentile(boot, [10, 90])),
            )
        )
    return tuple(out)


def fit(
    observations: list[Observation],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    starts: int | None = parametric.DEFAULT_STARTS,
    effective_data: bool = True,
) -> FitResult:
    """Fit all laws on the non-hold-out runs, bootstrap `resamples` times (seeded), predict the hold-out runs.
    effective_data: runs that repeated data count their effective D (repetition.py), not the tokens they read."""
    runs = [o for o in observations if not o.holdout]
    held = [o for o in observations if o.holdout]
    if len(runs) < MIN_RUNS:
        raise ConfigError(
            f"{len(runs)} run(s) to fit, but the five-parameter law needs at least {MIN_RUNS}; add runs or "
            "un-mark hold-outs"
        )
    with parametric.single_threaded():
        fits = _fit_all(runs, starts=starts, warm_start=None, effective=effective_data)
        budgets = tuple(sorted({b.C for b in fits.isoflop.budgets} | {o.budget or o.compute for o in held}))
        values = _values(fits, budgets)
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(resamples):
            pick = rng.integers(0, len(runs), size=len(runs))
            boot = _fit_all([runs[i] for i in pick], starts=0, warm_start=fits.parametric.law, effective=effective_data)
            rows.append(_values(boot, budgets))
    samples = {k: np.array([row[k] for row in rows]) for k in values}
    # no interval for a quantity the full data could not give: resamples with duplicated runs sometimes can
    intervals = {k: _interval(v if math.isfinite(values[k]) else np.array([])) for k, v in samples.items()}
    law = fits.parametric.law
    D = law_tokens(runs, effective_data)
    shares = parametric.term_shares(law, [r.N for r in runs], D)
    not_identified = identify.classify(values, intervals, samples, parametric.BOUNDS, shares)
    residuals = np.log([r.loss for r in runs]) - np.log([law.loss(r.N, d) for r, d in zip(runs, D)])
    result = FitResult(
        values=values,
        intervals=intervals,
        not_identified=not_identified,
        samples=samples,
        fits=fits,
        budgets=budgets,
        holdout=(),
        fitted_runs=len(runs),
        resamples=resamples,
        seed=seed,
        effective_data=effective_data,
        epochs={o.run_id: o.epochs for o in observations if o.epochs is not None and o.epochs > 1},
    )
    holdout = _predict_holdout(held, result.bootstrap_laws(), law, residuals, rng, effective_data)
    return dataclasses.replace(result, holdout=holdout)
