"""What repeated tokens are worth: Muennighoff et al. (2023, "Scaling Data-Constrained Language Models").

A run that reads D tokens of a split of U unique ones repeats R = D / U - 1 epochs' worth. Their fit values the
repeats with an exponential decay: D' = U + U R* (1 - exp(-R / R*)), with R* = 15.388 fitted on 182 runs (0.984 of
fresh data at 2 epochs, 0.931 at 4, 0.661 at 16; never more than (1 + R*) U). The fitter puts D' where the law
has D, so that runs that repeat data sit on the same surface as runs that do not.
"""

import numpy as np

R_D_STAR = 15.388  # Muennighoff et al. (2023), the fitted decay constant of repeated data's value


def effective_tokens(D, U, r_star: float = R_D_STAR):
    """D' for D tokens read of U unique ones (D itself when D <= U; U None or 0: unknown, D itself)."""
    D = np.asarray(D, dtype=float)
    if U is None:
        return D
    U = np.asarray(U, dtype=float)
    known = np.isfinite(U) & (U > 0)
    safe_U = np.where(known, U, 1.0)
    repeats = np.maximum(D / safe_U - 1.0, 0.0)
    worth = safe_U + safe_U * r_star * -np.expm1(-repeats / r_star)
    return np.where(known & (D > safe_U), worth, D)
