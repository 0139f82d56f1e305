"""The `blocked` variant's block path (the shared suite's short sequences take its dense path)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meshlm.model import attention
from meshlm.model.attention import AttentionMask


@pytest.mark.parametrize("T", [128, 256, 192])
def test_blocks_equal_reference_values_and_gradients(T):
    kq, kk, kv, kg = jax.random.split(jax.random.key(T), 4)
    q, k, v, g = (jax.random.normal(key, (2, 2, T, 8)) for key in (kq, kk, kv, kg))  # heads-major
    mask = AttentionMask.causal(2, T)

    def loss(variant):
        return lambda q, k, v: jnp.sum(attention.kernel(variant)(q, k, v, mask) * g)

    np.testing.assert_allclose(
        attention.kernel("blocked")(q, k, v, mask), attention.kernel("reference")(q, k, v, mask), atol=1e-5
    )
    got = jax.grad(loss("blocked"), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss("reference"), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-4)
