"""One training run as the fitter sees it: sizes, final loss, and optionally its loss curve."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Observation:
    """A finished run. N: parameters (FLOP-equivalent, so C = 6 N D), D: training tokens, loss: final validation loss.

    C is the run's compute when it was counted exactly (else 6 N D is used); budget names the IsoFLOP budget the run
    belongs to (else runs are grouped by C); holdout runs are never fitted, only predicted; curve holds
    (tokens seen, validation loss) pairs along the run for Approach 1; trunk names the cooldown trunk a branch shares
    with the other budgets of its size and seed; unique_tokens is the size of the training split (None: not known),
    so a run with D above it repeated data.
    """

    N: float
    D: float
    loss: float
    C: float | None = None
    run_id: str = ""
    budget: float | None = None
    holdout: bool = False
    curve: tuple[tuple[float, float], ...] = ()
    trunk: str = ""
    unique_tokens: float | None = None

    @property
    def compute(self) -> float:
        return self.C if self.C is not None else 6.0 * self.N * self.D

    @property
    def epochs(self) -> float | None:
        return None if not self.unique_tokens else self.D / self.unique_tokens

    @property
    def flops_per_token(self) -> float:
        return self.compute / self.D
