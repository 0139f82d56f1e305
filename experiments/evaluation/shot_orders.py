"""The same shots of an item in several orders, so that order sensitivity is measured apart from the choice of shots."""

import math
from collections.abc import Sequence

import numpy as np

from meshlm.experiments.evaluation.prompts import Item, stable_hash

ORDER_STREAM = 1  # keeps the orders' random stream apart from the shot draw's, which uses the same seed


def orders(shots: Sequence[Item], n: int, seed: int, task: str, item_id: str) -> list[list[Item]]:
    """min(n, K!) distinct orders: the drawn order first (so n=1 is the plain evaluation), then permutations
    seeded by (seed, task, item id) only, like the shots themselves."""
    k = len(shots)
    rng = np.random.default_rng([seed, stable_hash(task), stable_hash(item_id), ORDER_STREAM])
    seen = [tuple(range(k))]
    while len(seen) < count(n, k):
        order = tuple(int(i) for i in rng.permutation(k))
        if order not in seen:
            seen.append(order)
    return [[shots[i] for i in order] for order in seen]


def count(n: int, k: int) -> int:
    """Distinct orders of K shots evaluated for --orders n."""
    return min(n, math.factorial(k))
