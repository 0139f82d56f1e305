"""Which fitted quantities the runs pin down. `converged` only says that L-BFGS stopped; a parameter it left at a
bound, or whose 80 % bootstrap interval spans more than a factor of 10, is *not identified*: the data leave it free
(many values fit about as well), and every closed form resting on it inherits that.

"Within 1 % of a bound" is read in each parameter's own scale. For alpha and beta it is 1 % of the bound's value
(their lower bound 0 counts only when reached; an exponent drifting towards 0 shows as an interval reaching 0).
E, A and B are fitted as logs, and their lower bounds (e^-20, e^-50) stand for zero, of which 1 % is nothing. L-BFGS
stalls short of such a bound, since the gradient in log E shrinks with E (exact E = 0 data stop at E = 3e-9, 1.6x
the bound, on an AVX2 host; at the bound on an AVX-512 one), so for them 1 % is read on the loss they are part of: a
term that adds at most 1 % to every fitted run's predicted loss is as good as absent, i.e. at its lower bound.
"""

import dataclasses
import math

import numpy as np

BOUND_TOLERANCE = 0.01
MAX_SPAN = 10.0  # hi80 / lo80
MIN_FITTED = 0.8  # an 80 % interval needs a value from at least 80 % of the resamples

# Approach 3's closed forms and the parameters they rest on (the quantities given at a compute C by their prefix).
_SIZES = ("A", "B", "alpha", "beta")
RESTS_ON = {
    "a": ("alpha", "beta"),
    "b": ("alpha", "beta"),
    "G": _SIZES,
    "N_opt": _SIZES,
    "D_opt": _SIZES,
    "tokens_per_param": _SIZES,
    "L_opt": ("E", *_SIZES),
}


def rests_on(name: str) -> tuple[str, ...]:
    return RESTS_ON.get(name.split("@")[0], ())


def bound_reason(value: float, bounds: tuple[float, float], share: float | None = None) -> str:
    """Why value counts as at a bound, or "". share: for a log-fitted parameter, the largest part of the predicted
    loss its term makes at any fitted run."""
    lo, hi = bounds
    if value <= lo + BOUND_TOLERANCE * abs(lo):
        return f"at its lower bound {lo:.3g}"
    if share is not None and share <= BOUND_TOLERANCE:
        return f"as good as at its lower bound {lo:.3g}: it makes at most {share * 100:.2g} % of any fitted run's loss"
    if value >= hi - BOUND_TOLERANCE * abs(hi):
        return f"at its upper bound {hi:.3g}"
    return ""


def interval_reason(interval: dict[str, float], samples: np.ndarray) -> str:
    """Why the bootstrap leaves the quantity free, or ""."""
    fitted = float(np.isfinite(samples).mean())
    if fitted < MIN_FITTED:
        return f"only {fitted * 100:.0f} % of the bootstrap resamples could fit it, and an 80 % interval needs 80 %"
    lo, hi = interval["lo80"], interval["hi80"]
    if lo <= 0:
        return f"its 80 % interval {lo:.3g} – {hi:.3g} does not stay above zero"
    if hi / lo > MAX_SPAN:
        return f"its 80 % interval {lo:.3g} – {hi:.3g} spans a factor of {hi / lo:.3g}"
    return ""


@dataclasses.dataclass(frozen=True)
class Unidentified:
    reason: str  # its own (at a bound, a wide interval); "" when it is free only through what it rests on
    rests_on: tuple[str, ...]  # the parameters it is computed from that are not identified

    def __str__(self) -> str:
        through = f"rests on {', '.join(self.rests_on)}" if self.rests_on else ""
        return "; ".join(r for r in (self.reason, through) if r)


def classify(
    values: dict[str, float],
    intervals: dict[str, dict[str, float]],
    samples: dict[str, np.ndarray],
    bounds: dict[str, tuple[float, float]],
    shares: dict[str, float],
) -> dict[str, Unidentified]:
    """The fitted quantities (NaN values are not) that are not identified. Without resamples (empty samples) only
    the bounds are checked."""
    own = {}
    for name, value in values.items():
        if math.isnan(value):
            continue
        reasons = [bound_reason(value, bounds[name], shares.get(name))] if name in bounds else []
        if len(samples.get(name, ())):
            reasons.append(interval_reason(intervals[name], samples[name]))
        own[name] = "; ".join(r for r in reasons if r)
    out = {}
    for name, reason in own.items():
        free = tuple(p for p in rests_on(name) if own.get(p))
        if reason or free:
            out[name] = Unidentified(reason, free)
    return out


def summary(not_identified: dict[str, Unidentified]) -> str:
    """One line naming the quantities not identified for a reason of their own, or "" when there are none."""
    own = [name for name, u in not_identified.items() if u.reason]
    if not own:
        return ""
    derived = sum(not u.reason for u in not_identified.values())
    return f"not identified: {', '.join(own)}" + (f"; {derived} closed form(s) rest on them" if derived else "")
