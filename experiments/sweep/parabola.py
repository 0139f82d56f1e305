"""The minimum of a parabola through (x, y) points, and whether the points bracket it: Approach 2's IsoFLOP curves
(x = ln N) and the tune stage's U-curves (x = ln LR, ln batch) alike.

A minimum is not bracketed when the lowest point is at either end of the grid, the parabola opens downwards, or its
vertex lies outside the grid: its place is then an extrapolation that the points do not constrain.
"""

import dataclasses

import numpy as np

MIN_POINTS = 3  # a parabola has three coefficients


@dataclasses.dataclass(frozen=True)
class Vertex:
    coeffs: tuple[float, float, float] | None  # y = c0 x^2 + c1 x + c2; None with fewer than 3 distinct x
    x: float | None  # the minimum; None when the points do not bracket it
    y: float | None
    flag: str  # "" when bracketed; otherwise why not


def vertex(x, y, what: str = "point") -> Vertex:
    """The parabola's minimum, flagged with the reason when the points do not bracket it; `what` names a point of the
    grid in the reason ("lowest loss at the largest LR")."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    distinct = len(np.unique(x))
    if distinct < MIN_POINTS:
        return Vertex(None, None, None, f"only {distinct} {what}(s); a parabola needs {MIN_POINTS}")
    c0, c1, c2 = np.polyfit(x, y, 2)
    coeffs = (float(c0), float(c1), float(c2))
    lowest = x[np.argmin(y)]
    if lowest in (x.min(), x.max()):
        edge = "smallest" if lowest == x.min() else "largest"
        return Vertex(coeffs, None, None, f"lowest loss at the {edge} {what}: widen the grid")
    if c0 <= 0:
        return Vertex(coeffs, None, None, "parabola opens downwards")
    at = -c1 / (2 * c0)
    if not x.min() < at < x.max():
        return Vertex(coeffs, None, None, "parabola minimum outside the grid")
    return Vertex(coeffs, float(at), float(c2 - c1 * c1 / (4 * c0)), "")


def vertex_near_lowest(x, y, what: str = "point") -> Vertex:
    """The parabola through the lowest point and its two neighbours (in x), flagged as vertex() flags. For a U whose
    walls are not quadratic: the tune stage's loss rises far more steeply past LR* than below it, and runs near
    divergence level off high, so a parabola through the whole grid is pulled off the bottom, or out of the grid."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(x)) < MIN_POINTS:
        return vertex(x, y, what)
    order = np.argsort(x)
    x, y = x[order], y[order]
    lowest = int(np.argmin(y))
    if lowest in (0, len(x) - 1):
        return vertex(x, y, what)
    return vertex(x[lowest - 1 : lowest + 2], y[lowest - 1 : lowest + 2], what)
