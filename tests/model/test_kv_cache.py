"""The decode cache: sizes per layer type, the ring buffer, in-place updates, and the per-layer patterns."""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model import presets
from meshlm.model.attention import AttentionMask, KVCache, alibi, kv_cache
from meshlm.model.attention.gpt3_sparse import Gpt3Sparse
from meshlm.model.flops import count_params
from meshlm.model.transformer import Transformer
from tests.model.helpers import MODERN, TINY


def _bytes_per_token(cfg) -> int:
    return jax.eval_shape(lambda: KVCache.empty(cfg, 2, 16)).bytes_per_token()


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_grouped_query_cache_is_smaller_by_the_group_factor(n_kv_heads):
    gqa = dataclasses.replace(TINY, attention_layer="gqa", n_kv_heads=n_kv_heads)
    L, H, K = TINY.n_layers, TINY.n_heads, TINY.head_dim
    assert _bytes_per_token(TINY) == L * 2 * H * K * 4  # f32 keys and values of every head
    assert _bytes_per_token(gqa) == _bytes_per_token(TINY) * n_kv_heads // H


def test_latent_cache_holds_the_latent_and_the_rotary_key():
    cfg = dataclasses.replace(MODERN, attention_layer="mla", qk_norm=False, mla_latent_dim=12, mla_rope_dim=4)
    assert _bytes_per_token(cfg) == cfg.n_layers * (12 + 4) * 4


def test_sliding_window_cache_stops_growing_at_the_window():
    cfg = dataclasses.replace(TINY, attention_layer="sliding_window", attention_window=5)
    assert KVCache.empty(cfg, 2, 1000).slots == 5
    assert KVCache.empty(cfg, 2, 3).slots == 3


def test_ring_write_keeps_the_newest_tokens_in_slot_order():
    old_BS = jnp.full((1, 4), -1)
    # 6 tokens (times 2..7) into a 4-slot ring starting at time 2: times 4..7 survive, time t in slot t % 4.
    got = kv_cache.write(old_BS, jnp.arange(2, 8)[None], start=jnp.int32(2), axis=1, ring=True)
    assert got.tolist() == [[4, 5, 6, 7]]
    # 2 tokens at times 7, 8: slots 3 and 0; the others untouched.
    got = kv_cache.write(old_BS, jnp.array([[7, 8]]), start=jnp.int32(7), axis=1, ring=True)
    assert got.tolist() == [[8, -1, -1, 7]]
    got = kv_cache.write(old_BS, jnp.array([[9]]), start=jnp.int32(9), axis=1, ring=True)
    assert got.tolist() == [[-1, 9, -1, -1]]


def _copied_arrays(compiled_text: str, sizes: set[int]) -> list[str]:
    """Lines of compiled HLO that copy or transpose an array holding as many elements as one in `sizes`."""
    found = []
    for line in compiled_text.splitlines():
        match = re.search(r"= f32\[([\d,]+)\]\{[\d,]*\} (copy|transpose)\(", line)
        if match and math.prod(map(int, match.group(1).split(","))) in sizes:
            found.append(line.strip())
    return found


@pytest.mark.parametrize("layer", ["mha", "gqa", "sliding_window"])
def test_a_decode_step_updates_the_cache_in_place(layer):
    """No instruction of a compiled one-token step, as generation runs it (per-layer cache and weights), copies or
    transposes a whole cache array or weight matrix (the cache is donated, as the decode loop's carry is). Batch 2:
    at batch 1 XLA lays the attention's size-1 dots out with a copy of each layer's keys and values
    (docs/performance.md)."""
    batch = 2
    cfg = dataclasses.replace(TINY, attention_layer=layer, n_kv_heads=2 if layer != "mha" else 0, attention_window=6)
    model = Transformer(cfg, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    layer_params = model.split_layers()
    cache = KVCache.empty(cfg, batch, 12, per_layer=True)

    def step(state, layer_params, cache, token_B1):
        return nnx.merge(graphdef, state)(token_B1, cache=cache, layer_params=layer_params)

    tokens_B1 = jnp.ones((batch, 1), jnp.int32)
    compiled = jax.jit(step, donate_argnums=2).lower(state, layer_params, cache, tokens_B1).compile()
    sizes = {x.size for x in jax.tree.leaves(cache.layers)}
    sizes |= {x.size for x in jax.tree.leaves(layer_params) if x.ndim >= 2}
    offending = _copied_arrays(compiled.as_text(), sizes)
    assert not offending, offending[:3]


def test_stacked_and_per_layer_caches_decode_alike():
    """The scanned layers' stacked cache and the unrolled per-layer one give the same logits, step after step."""
    model = Transformer(MODERN, nnx.Rngs(0))
    tokens_BT = jax.random.randint(jax.random.key(1), (2, 9), 0, MODERN.vocab_size)
    caches = [KVCache.empty(MODERN, 2, 12), KVCache.empty(MODERN, 2, 12, per_layer=True)]
    assert not caches[0].per_layer and caches[1].per_layer
    for t in range(0, 9, 3):
        (a_BTV, caches[0]), (b_BTV, caches[1]) = (model(tokens_BT[:, t : t + 3], cache=c) for c in caches)
        np.testing.assert_allclose(a_BTV, b_BTV, atol=1e-5)
    assert caches[0].bytes_per_token() == caches[1].bytes_per_token()


def test_gpt3_sparse_alternates_dense_and_banded_layers():
    cfg = dataclasses.replace(TINY, attention_layer="gpt3_sparse", attention_window=3, n_layers=4)
    layer = nnx.eval_shape(lambda: Gpt3Sparse(cfg, nnx.Rngs(0)))
    mask = AttentionMask.causal(1, 6)
    for index, band in enumerate([0, 3, 0, 3]):
        visible_TS = np.asarray(layer.layer_mask(mask, jnp.int32(index)).dense_BTS()[0])
        want_TS = np.tril(np.ones((6, 6), bool)) & (np.triu(np.ones((6, 6), bool), -band + 1) if band else True)
        np.testing.assert_array_equal(visible_TS, want_TS)


@pytest.mark.parametrize("name", list(presets.GPT3_TABLE))
def test_gpt3_sparse_presets_have_the_dense_models_parameters(name):
    sparse = presets.get(f"{name}-sparse")
    assert (sparse.attention_layer, sparse.attention_pattern) == ("gpt3_sparse", "dense,local")
    assert count_params(sparse).total == count_params(presets.get(name)).total


def test_alibi_slopes_follow_the_paper():
    np.testing.assert_allclose(alibi.alibi_slopes_H(8), [2.0**-i for i in range(1, 9)])
    # 6 heads: the 4-head slopes, then every other slope of the 8-head series.
    np.testing.assert_allclose(alibi.alibi_slopes_H(6), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3])
