"""ALiBi (Press et al. 2022): no position embedding; each head penalises a key linearly in its distance."""

import math

import jax
import jax.numpy as jnp


def alibi_slopes_H(n_heads: int) -> jax.Array:
    """The paper's geometric slopes 2^(-8 h / n) for h = 1..n, with its interleaving when n is not a power of 2."""
    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = [2 ** (-8 * h / closest) for h in range(1, closest + 1)]
    if closest < n_heads:
        slopes += [2 ** (-4 * h / closest) for h in range(1, 2 * closest + 1, 2)][: n_heads - closest]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias_BHTS(q_index_BT: jax.Array, kv_index_BS: jax.Array, n_heads: int) -> jax.Array:
    distance_BTS = (q_index_BT[:, :, None] - kv_index_BS[:, None, :]).astype(jnp.float32)
    return -alibi_slopes_H(n_heads)[None, :, None, None] * distance_BTS[:, None]
