"""The shared suite every registered attention variant must pass; a new variant is checked with no new test code."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model import attention
from meshlm.model.attention import AttentionMask
from meshlm.model.transformer import KVCache, Transformer
from tests.model.helpers import MODERN, TINY, jit_forward

VARIANTS = attention.names()


def _qkv(B=2, T=9, S=9, H=3, K=8, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, T, H, K)),
        jax.random.normal(kk, (B, S, H, K)),
        jax.random.normal(kv, (B, S, H, K)),
    )


def test_registry_holds_the_two_builtin_variants():
    assert {"reference", "fused"} <= set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("base", [TINY, MODERN], ids=["gpt", "modern"])
def test_causality_gradient_to_later_positions_is_exactly_zero(variant, base):
    cfg = dataclasses.replace(base, attention=variant)
    model = Transformer(cfg, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x_TD = jax.random.normal(jax.random.key(1), (10, cfg.d_model))

    def per_position_loss_T(x_TD):
        # Bypass the embedding so the gradient is taken with respect to the inputs of the blocks.
        m = nnx.merge(graphdef, state)
        y_BTD, _ = m._run_blocks(x_TD[None], jnp.arange(10)[None], AttentionMask.causal(1, 10), None, None)
        return y_BTD[0].sum(-1)

    grad_TTD = np.asarray(jax.jit(jax.jacrev(per_position_loss_T))(x_TD))  # d loss_t / d x_s
    for t in range(10):
        assert np.all(grad_TTD[t, t + 1 :] == 0.0), f"position {t} depends on later inputs"
        assert np.any(grad_TTD[t, : t + 1] != 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T", [9, 256], ids=["short", "long"])
def test_equals_reference_plain_causal(variant, T):
    # The long case reaches paths a variant may take only for long sequences (e.g. blocked's query blocks).
    q, k, v = _qkv(T=T, S=T)
    mask = AttentionMask.causal(2, T)
    want = attention.get("reference")(q, k, v, mask)
    got = attention.get(variant)(q, k, v, mask)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_equals_reference_with_segments_and_padding(variant):
    q, k, v = _qkv()
    segment_BT = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]])
    mask = AttentionMask.causal(2, 9, segment_BT)
    want = attention.get("reference")(q, k, v, mask)
    got = attention.get(variant)(q, k, v, mask)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # A token of segment 2 must not see segment 1: changing segment 1's values leaves it unchanged.
    got2 = attention.get(variant)(q, k, v.at[0, :3].add(10.0), mask)
    np.testing.assert_allclose(got2[0, 3:7], got[0, 3:7], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_equals_reference_decoding_against_a_cache(variant):
    q, k, v = _qkv(T=3, S=12)
    B, T, S = 2, 3, 12
    q_index_BT = jnp.broadcast_to(5 + jnp.arange(T), (B, T))
    kv_index_BS = jnp.broadcast_to(jnp.arange(S), (B, S))
    kv_segment_BS = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [1] * 8 + [0] * 4])
    mask = AttentionMask(q_index_BT, kv_index_BS, jnp.ones((B, T), jnp.int32), kv_segment_BS)
    want = attention.get("reference")(q, k, v, mask)
    got = attention.get(variant)(q, k, v, mask)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("base", [TINY, MODERN], ids=["gpt", "modern"])
def test_kv_cache_decoding_equals_full_forward(variant, base):
    cfg = dataclasses.replace(base, attention=variant)
    forward = jit_forward(Transformer(cfg, nnx.Rngs(0)))
    tokens_BT = jax.random.randint(jax.random.key(2), (3, 16), 0, cfg.vocab_size)
    full_BTV, _ = forward(tokens_BT)
    cache = KVCache.empty(cfg, 3, 24)
    first_BTV, cache = forward(tokens_BT[:, :6], cache=cache)
    steps = [first_BTV]
    for t in range(6, 16):
        logits_B1V, cache = forward(tokens_BT[:, t : t + 1], cache=cache)
        steps.append(logits_B1V)
    incremental_BTV = jnp.concatenate(steps, axis=1)
    assert float(jnp.max(jnp.abs(incremental_BTV - full_BTV))) <= 1e-5
    assert int(cache.index) == 16
