"""The shared suite every registered attention kernel and layer must pass; a new variant is checked with no new
test code. Kernels run in the `mha` layer, layers with the `reference` kernel (and their `example` options)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model import attention, layout
from meshlm.model.attention import AttentionMask, KVCache
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner, model_axes
from tests.model.helpers import MODERN, TINY, jit_forward

KERNELS = attention.kernel_names()
# Exact kernels must equal `reference`; `reference` itself is the definition, so it is not compared with itself.
EXACT = [k for k in KERNELS if attention.is_exact(k) and k != "reference"]
LAYERS = attention.layer_names()
REDUCING = [name for name in LAYERS if attention.layer(name).reduces_to_mha is not None]
ALIBI = dataclasses.replace(TINY, position="alibi")
BASES = {"gpt": TINY, "modern": MODERN, "alibi": ALIBI}
MESHES = {
    "tensor": MeshConfig("data=4,tensor=2"),
    "tensor_sequence": MeshConfig("data=2,tensor=4", sequence_parallel=True),
}


def kernel_cfg(kernel: str, base: str):
    """Kernels are checked with learned positions and ALiBi (rotary and qk-norm happen before the kernel)."""
    return dataclasses.replace(BASES[base], attention=kernel)


def layer_cfg(layer: str, base: str):
    return dataclasses.replace(BASES[base], attention_layer=layer, **attention.layer(layer).example)


# -- kernels, on random queries, keys and values ---------------------------------------------------------------


def _qkv(B=2, T=9, S=9, H=4, G=2, K=8, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, H, T, K)),
        jax.random.normal(kk, (B, G, S, K)),
        jax.random.normal(kv, (B, G, S, K)),
    )


def _jitted(kernel: str):
    return jax.jit(attention.kernel(kernel))


def _decode_mask() -> AttentionMask:
    """3 queries at time 5..7 against a 12-slot cache: row 0 left-padded by 2, later slots empty."""
    B, T, S = 2, 3, 12
    kv_segment_BS = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [1] * 8 + [0] * 4])
    return AttentionMask(
        jnp.broadcast_to(5 + jnp.arange(T), (B, T)),
        jnp.broadcast_to(jnp.arange(S), (B, S)),
        jnp.ones((B, T), jnp.int32),
        kv_segment_BS,
    )


def _packed(T: int) -> jax.Array:
    return jnp.stack([jnp.where(jnp.arange(T) < T // 3, 1, 2), jnp.where(jnp.arange(T) < T - 2, 1, 0)])


def _shared_prefix_ids(T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, segments, branches) [2, T]. Row 0: a context of T//3 tokens, two continuations of T//4 after
    it, then a second document. Row 1: four contexts of T//4 tokens, each with two continuations of one token in
    its last two slots (T//4 - 2 context tokens)."""
    c, n = T // 3, T // 4
    row0 = [(p, 1, 0) for p in range(c)] + [(c + p, 1, b) for b in (1, 2) for p in range(n)]
    row0 += [(p, 2, 0) for p in range(T - len(row0))]
    row1 = [(p if p < n - 2 else n - 2, g + 1, max(0, p - (n - 3))) for g in range(4) for p in range(n)]
    row1 += [(p, 9, 0) for p in range(T - len(row1))]
    return tuple(np.array([[r[i] for r in row0], [r[i] for r in row1]], np.int32) for i in range(3))


def _shared_prefix(T: int) -> AttentionMask:
    return AttentionMask.shared_prefix(*(jnp.asarray(x) for x in _shared_prefix_ids(T)))


# (mask, T, S, key/value heads): each reaches a different path of a kernel. Long sequences reach the paths some
# kernels take only there (blocked's query blocks, the Pallas kernels' 128-token tiles).
CASES = {
    "causal_short": (lambda: AttentionMask.causal(2, 9), 9, 9, 2),
    "causal_long": (lambda: AttentionMask.causal(2, 256), 256, 256, 2),
    "causal_long_mha": (lambda: AttentionMask.causal(2, 256), 256, 256, 4),
    "causal_long_mqa": (lambda: AttentionMask.causal(2, 256), 256, 256, 1),
    "packed_short": (lambda: AttentionMask.causal(2, 9, _packed(9)), 9, 9, 2),
    "packed_long": (lambda: AttentionMask.causal(2, 256, _packed(256)), 256, 256, 2),
    "decode": (_decode_mask, 3, 12, 2),
    "window": (lambda: AttentionMask.causal(2, 9).with_window(4), 9, 9, 2),
    "window_traced": (lambda: AttentionMask.causal(2, 9, _packed(9)).with_window(jnp.int32(3)), 9, 9, 2),
    "alibi": (lambda: AttentionMask.causal(2, 9, _packed(9)).with_alibi(), 9, 9, 4),
    "shared_prefix_short": (lambda: _shared_prefix(12), 12, 12, 2),
    "shared_prefix_long": (lambda: _shared_prefix(256), 256, 256, 2),
    "shared_prefix_alibi": (lambda: _shared_prefix(12).with_alibi(), 12, 12, 4),
    "shared_prefix_window": (lambda: _shared_prefix(256).with_window(40), 256, 256, 2),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernel", EXACT)
def test_kernel_equals_reference(kernel, case):
    make_mask, T, S, G = CASES[case]
    q, k, v = _qkv(T=T, S=S, G=G)
    mask = make_mask()
    want = _jitted("reference")(q, k, v, mask)
    np.testing.assert_allclose(_jitted(kernel)(q, k, v, mask), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["causal_long", "packed_short", "decode", "shared_prefix_short"])
@pytest.mark.parametrize("kernel", EXACT)
def test_kernel_gradients_equal_reference(kernel, case):
    make_mask, T, S, G = CASES[case]
    q, k, v = _qkv(T=T, S=S, G=G)
    mask, g = make_mask(), jax.random.normal(jax.random.key(9), q.shape)

    def grads(name):
        loss = lambda q, k, v: jnp.sum(attention.kernel(name)(q, k, v, mask) * g)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for got, want in zip(grads(kernel), grads("reference")):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_keeps_packed_documents_apart(kernel):
    q, k, v = _qkv()
    mask = AttentionMask.causal(2, 9, _packed(9))
    out = _jitted(kernel)(q, k, v, mask)
    # Row 0's second document (t >= 3) must not see the first: changing the first's values leaves it unchanged.
    changed = _jitted(kernel)(q, k, v.at[0, :, :3].add(10.0), mask)
    np.testing.assert_allclose(changed[0, :, 3:], out[0, :, 3:], atol=1e-5)
    assert not np.allclose(changed[0, :, :3], out[0, :, :3])


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_keeps_continuations_of_a_shared_context_apart(kernel):
    q, k, v = _qkv(T=12, S=12)
    mask = _shared_prefix(12)  # row 0: context 0..3, continuation 1 at 4..6, continuation 2 at 7..9
    out = _jitted(kernel)(q, k, v, mask)
    changed = _jitted(kernel)(q, k, v.at[0, :, 4:7].add(10.0), mask)
    np.testing.assert_allclose(changed[0, :, :4], out[0, :, :4], atol=1e-5)  # the context sees no continuation
    np.testing.assert_allclose(changed[0, :, 7:], out[0, :, 7:], atol=1e-5)  # nor the other continuation
    assert not np.allclose(changed[0, :, 4:7], out[0, :, 4:7])
    context_changed = _jitted(kernel)(q, k, v.at[0, :, :4].add(10.0), mask)
    assert not np.allclose(context_changed[0, :, 7:10], out[0, :, 7:10])  # every continuation sees the context


# -- every kernel across the devices of a context-parallel mesh ---------------------------------------------------

slow = pytest.mark.slow
# Kernels that return the log-sum-exps ring attention merges blocks by; every kernel serves the all-gather variant.
RING = [k for k in KERNELS if attention.block(attention.kernel(k)) is not None]
# (mask, key/value heads) at T = 64, cut into 2 x context chunks: causal, packed documents with multi-query heads,
# shared-prefix rows with a traced window, and packed rows with a window and ALiBi.
CONTEXT_CASES = {
    "causal": (lambda: AttentionMask.causal(2, 64), 2),
    "packed_mqa": (lambda: AttentionMask.causal(2, 64, _packed(64)), 1),
    "shared_prefix_window": (lambda: _shared_prefix(64).with_window(jnp.int32(9)), 2),
    "alibi_window": (lambda: AttentionMask.causal(2, 64, _packed(64)).with_window(jnp.int32(9)).with_alibi(), 4),
}
# The quick loop checks each kernel once, at context=4 on its hardest mask it takes; the rest are marked slow.
CONTEXT_KERNELS = [
    pytest.param(
        kernel,
        impl,
        n,
        case,
        id=f"{kernel}-{impl}-context{n}-{case}",
        marks=() if n == 4 and case == ("alibi_window" if attention.takes_bias(kernel) else "packed_mqa") else slow,
    )
    for impl, names in (("ring", RING), ("all_gather", KERNELS))
    for kernel in names
    for n in ((2, 4) if impl == "ring" else (4,))
    for case in CONTEXT_CASES
    # ALiBi is a logit bias: a kernel that takes none is never configured with it (the config refuses the pair).
    if attention.takes_bias(kernel) or not CONTEXT_CASES[case][0]().alibi
]


def _across_context(kernel: str, mask: AttentionMask, mesh: MeshConfig | None):
    """kernel(q, k, v) -> out: on one device, or with q, k, v and the mask in the load-balanced order of the
    mesh's context axis and attention computed across it, the output back in time order."""
    attend = attention.kernel(kernel)
    if mesh is None:
        return lambda q, k, v: attend(q, k, v, mask)
    partitioner = Partitioner.build(mesh)
    along_time = lambda x, move: jnp.swapaxes(move(jnp.swapaxes(x, 1, 2)), 1, 2)  # noqa: E731  heads-major arrays

    def across(q, k, v):
        with partitioner.activate():
            q, k, v = (along_time(x, layout.to_context_order) for x in (q, k, v))
            out = layout.attend(attend, q, k, v, mask.in_order(layout.to_context_order))
            return along_time(out, layout.to_time_order)

    return across


@pytest.mark.parametrize("kernel, impl, n, case", CONTEXT_KERNELS)
def test_kernel_across_a_context_axis_equals_one_device(kernel, impl, n, case):
    make_mask, G = CONTEXT_CASES[case]
    q, k, v = _qkv(T=64, S=64, G=G)
    mesh, g = MeshConfig(f"data={8 // n},context={n}", context_impl=impl), jax.random.normal(jax.random.key(9), q.shape)

    def values_and_grads(mesh):
        attend = _across_context(kernel, make_mask(), mesh)
        loss = lambda q, k, v: jnp.sum(attend(q, k, v) * g)  # noqa: E731
        return jax.jit(lambda q, k, v: (attend(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))(q, k, v)

    (got, got_grads), (want, want_grads) = values_and_grads(mesh), values_and_grads(None)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    for got_grad, want_grad in zip(got_grads, want_grads):
        np.testing.assert_allclose(got_grad, want_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", sorted(set(KERNELS) - set(RING)))
def test_a_kernel_without_log_sum_exps_refuses_the_ring_naming_the_fix(kernel):
    q, k, v = _qkv(T=64, S=64)
    attend = _across_context(kernel, AttentionMask.causal(2, 64), MeshConfig("data=2,context=4"))
    with pytest.raises(ConfigError, match="set mesh.context_impl=all_gather, or model.attention to one of") as e:
        jax.jit(attend)(q, k, v)
    assert "\n" not in str(e.value)


# -- the kernels that are not softmax attention, against their definitions written out here -------------------


def _by_query_head(x_BGSK: jax.Array, H: int) -> jax.Array:
    """Each key/value head repeated for the H / G query heads that share it: query head h reads group h // (H/G)."""
    return jnp.repeat(x_BGSK, H // x_BGSK.shape[1], axis=1)


@pytest.mark.parametrize("segments", [False, True], ids=["causal", "packed"])
def test_linear_equals_its_quadratic_form_across_chunks(segments):
    """Katharopoulos et al. (2020), eq. 6 with phi = elu + 1: out_t = sum_{s visible} phi(q_t).phi(k_s) v_s over the
    same sum without v_s. T = 200 spans three 64-token chunks and part of a fourth, so the plain causal mask reaches
    the running sum carried across chunks."""
    B, H, G, T = 2, 4, 2, 200
    q, k, v = _qkv(B=B, T=T, S=T, H=H, G=G)
    segment_BT = jnp.stack([jnp.where(jnp.arange(T) < 130, 1, 2), jnp.ones(T, jnp.int32)])
    mask = AttentionMask.causal(B, T, segment_BT if segments else None)
    assert mask.plain_causal != segments  # the chunked path, or the masked one
    phi = lambda x: jnp.where(x > 0, x + 1.0, jnp.exp(x))  # noqa: E731  elu(x) + 1
    same_segment_BTS = segment_BT[:, :, None] == segment_BT[:, None, :] if segments else True
    visible_BTS = jnp.tril(jnp.ones((T, T), bool))[None] & same_segment_BTS
    weights_BHTS = jnp.einsum("bhtk,bhsk->bhts", phi(q), phi(_by_query_head(k, H))) * visible_BTS[:, None]
    want = jnp.einsum("bhts,bhsk->bhtk", weights_BHTS, _by_query_head(v, H)) / weights_BHTS.sum(-1, keepdims=True)
    np.testing.assert_allclose(_jitted("linear")(q, k, v, mask), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("segments", [False, True], ids=["causal", "packed"])
def test_softcap_caps_logits_past_the_cap(segments, users_compiler):
    """Gemma 2's soft cap, 50 tanh(logits / 50), applied to the scaled logits before the mask and the softmax.
    Queries and keys 30 times larger than unit scale put most logits far past the cap."""
    B, H, G, T, K, cap = 2, 4, 2, 20, 8, 50.0
    q, k, v = _qkv(B=B, T=T, S=T, H=H, G=G, K=K)
    q, k = 30.0 * q, 30.0 * k
    segment_BT = jnp.stack([jnp.where(jnp.arange(T) < 8, 1, 2), jnp.ones(T, jnp.int32)])
    mask = AttentionMask.causal(B, T, segment_BT if segments else None)
    # The hand formula in float64 NumPy: no XLA tanh or softmax in the reference.
    q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, _by_query_head(k, H), _by_query_head(v, H)))
    logits_BHTS = np.einsum("bhtk,bhsk->bhts", q64, k64) / np.sqrt(K)
    assert np.mean(np.abs(logits_BHTS) > 2 * cap) > 0.5  # far into tanh's flat part
    same_segment_BTS = np.asarray(segment_BT[:, :, None] == segment_BT[:, None, :]) if segments else True
    visible_BHTS = (np.tril(np.ones((T, T), bool))[None] & same_segment_BTS)[:, None]
    capped_BHTS = np.where(visible_BHTS, cap * np.tanh(logits_BHTS / cap), -np.inf)
    weights_BHTS = np.exp(capped_BHTS - capped_BHTS.max(-1, keepdims=True))
    want = np.einsum("bhts,bhsk->bhtk", weights_BHTS / weights_BHTS.sum(-1, keepdims=True), v64)
    # As users compile it: with logits past 100, the suite's quick compiles (tests/conftest.py) round tanh otherwise.
    got = jax.jit(attention.kernel("softcap"), compiler_options=users_compiler)(q, k, v, mask)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # Uncapped, the largest logit takes all the weight: a different output, so the cap is what was checked.
    assert float(jnp.max(jnp.abs(got - _jitted("reference")(q, k, v, mask)))) > 0.1


# -- kernels and layers in the model ----------------------------------------------------------------------------

VARIANTS = [("kernel", name) for name in KERNELS] + [("layer", name) for name in LAYERS]
VARIANT_IDS = [f"{kind}-{name}" for kind, name in VARIANTS]
# Kernels see rotary positions and qk-norm only through their inputs, so the modern base checks layers alone.
# The gpt base runs in the quick loop; the others are marked slow (still run by make test).
VARIANT_BASES = [
    pytest.param(variant, base, id=f"{vid}-{base}", marks=() if base == "gpt" else pytest.mark.slow)
    for variant, vid in zip(VARIANTS, VARIANT_IDS)
    for base in BASES
    if not (variant[0] == "kernel" and base == "modern")
    # ALiBi is a logit bias: a kernel that takes none is never configured with it (the config refuses the pair).
    and not (variant[0] == "kernel" and base == "alibi" and not attention.takes_bias(variant[1]))
]


def variant_cfg(variant, base: str):
    kind, name = variant
    return kernel_cfg(name, base) if kind == "kernel" else layer_cfg(name, base)


@pytest.mark.parametrize("variant, base", VARIANT_BASES)
def test_causality_gradient_to_later_positions_is_exactly_zero(variant, base):
    cfg = variant_cfg(variant, base)
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    x_TD = jax.random.normal(jax.random.key(1), (10, cfg.d_model))

    def per_position_loss_T(x_TD):
        # Bypass the embedding so the gradient is taken with respect to the inputs of the blocks.
        m = nnx.merge(graphdef, state)
        y_BTD, _ = m._run_blocks(x_TD[None], jnp.arange(10)[None], AttentionMask.causal(1, 10), None, None)
        return y_BTD[0].sum(-1)

    grad_TTD = np.asarray(jax.jit(jax.jacrev(per_position_loss_T))(x_TD))  # d loss_t / d x_s
    assert np.all(np.isfinite(grad_TTD))
    for t in range(10):
        assert np.all(grad_TTD[t, t + 1 :] == 0.0), f"position {t} depends on later inputs"
        assert np.any(grad_TTD[t, : t + 1] != 0.0)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_parameter_gradients_are_finite_and_nonzero(variant):
    cfg = variant_cfg(variant, "modern")
    graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    tokens_BT = jax.random.randint(jax.random.key(0), (2, 12), 0, cfg.vocab_size)
    segment_BT = jnp.array([[1] * 5 + [2] * 7, [1] * 12])

    def loss(params):
        logits_BTV, _ = nnx.merge(graphdef, params)(tokens_BT, segment_ids_BT=segment_BT)
        return -jnp.mean(jax.nn.log_softmax(logits_BTV)[..., 1])

    for path, g in jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params)):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path


@pytest.mark.parametrize("variant, base", VARIANT_BASES)
def test_a_shared_context_row_equals_each_continuation_in_a_row_of_its_own(variant, base):
    model = Transformer(variant_cfg(variant, base), nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda *ids: nnx.merge(graphdef, state)(*ids[:3], branch_ids_BT=ids[3])[0])
    plain = jit_forward(model)
    ctx, cont_a, cont_b = np.arange(1, 8), np.array([20, 21, 22, 23]), np.array([30, 31, 32])
    tokens = np.concatenate([ctx, cont_a, cont_b])[None]
    positions = np.concatenate([np.arange(7), 7 + np.arange(4), 7 + np.arange(3)])[None]
    branches = np.array([[0] * 7 + [1] * 4 + [2] * 3])
    got_TV = forward(tokens, positions, np.ones_like(tokens), branches)[0]
    want_a_TV = plain(np.concatenate([ctx, cont_a])[None])[0][0]
    want_b_TV = plain(np.concatenate([ctx, cont_b])[None])[0][0]
    np.testing.assert_allclose(got_TV[:11], want_a_TV, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got_TV[11:], want_b_TV[7:], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("per_layer", [False, True], ids=["stacked", "per-layer"])
@pytest.mark.parametrize("variant, base", VARIANT_BASES)
def test_kv_cache_decoding_equals_full_forward(variant, base, per_layer):
    cfg = variant_cfg(variant, base)
    forward = jit_forward(Transformer(cfg, nnx.Rngs(0)))
    tokens_BT = jax.random.randint(jax.random.key(2), (3, 16), 0, cfg.vocab_size)
    full_BTV, _ = forward(tokens_BT)
    cache = KVCache.empty(cfg, 3, 24, per_layer=per_layer)  # per layer: what generation uses, layers unrolled
    first_BTV, cache = forward(tokens_BT[:, :6], cache=cache)  # a prompt longer than the examples' windows
    steps = [first_BTV]
    for t in range(6, 16):
        logits_B1V, cache = forward(tokens_BT[:, t : t + 1], cache=cache)
        steps.append(logits_B1V)
    incremental_BTV = jnp.concatenate(steps, axis=1)
    assert float(jnp.max(jnp.abs(incremental_BTV - full_BTV))) <= 1e-5
    assert int(cache.index) == 16


def _logits_on(cfg, tokens_BT, segment_BT, mesh: MeshConfig | None):
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)

    def forward(params):
        s = jax.tree.map(lambda x: x, state)
        nnx.replace_by_pure_dict(s, params)
        return nnx.merge(graphdef, s)(tokens_BT, segment_ids_BT=segment_BT)[0]

    if mesh is None:
        return jax.jit(forward)(params)
    partitioner = Partitioner.build(mesh)
    placed = jax.device_put(params, partitioner.param_shardings(params, model_axes(cfg)))
    with partitioner.activate():
        return jax.jit(forward)(placed)


@pytest.mark.slow
@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_sharded_equals_unsharded(variant, mesh):
    cfg = dataclasses.replace(variant_cfg(variant, "modern"), n_heads=8, d_model=64, n_kv_heads=0)
    cfg = dataclasses.replace(cfg, **attention.layer(cfg.attention_layer).example)
    tokens_BT = jax.random.randint(jax.random.key(3), (8, 16), 0, cfg.vocab_size)
    segment_BT = jnp.where(jnp.arange(16) < 6, 1, 2)[None].repeat(8, 0)
    want = _logits_on(cfg, tokens_BT, segment_BT, None)
    np.testing.assert_allclose(_logits_on(cfg, tokens_BT, segment_BT, MESHES[mesh]), want, atol=2e-5, rtol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["ring", "all_gather"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_context_parallel_equals_unsharded(variant, impl):
    """The whole model with every sequence spread over context=4 (with data=2): the same logits, in time order.
    Kernels without log-sum-exps refuse the ring instead."""
    cfg = variant_cfg(variant, "modern")
    tokens_BT = jax.random.randint(jax.random.key(3), (4, 16), 0, cfg.vocab_size)
    segment_BT = jnp.where(jnp.arange(16) < 6, 1, 2)[None].repeat(4, 0)
    mesh = MeshConfig("data=2,context=4", context_impl=impl)
    if impl == "ring" and attention.block(attention.kernel(cfg.attention)) is None:
        with pytest.raises(ConfigError, match="mesh.context_impl=all_gather"):
            _logits_on(cfg, tokens_BT, segment_BT, mesh)
        return
    want = _logits_on(cfg, tokens_BT, segment_BT, None)
    np.testing.assert_allclose(_logits_on(cfg, tokens_BT, segment_BT, mesh), want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("base", ["gpt", "modern"])
@pytest.mark.parametrize("layer", REDUCING)
def test_layer_equals_mha_where_it_reduces_to_it(layer, base):
    layer_cls = attention.layer(layer)
    cfg = dataclasses.replace(BASES[base], attention_layer=layer, **layer_cls.reduces_to_mha)
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    params["blocks"]["attn"] = layer_cls.mha_params(params["blocks"]["attn"])
    mha_cfg = dataclasses.replace(BASES[base], attention_layer="mha")
    mha_graphdef, mha_state = nnx.split(Transformer(mha_cfg, nnx.Rngs(1)))
    nnx.replace_by_pure_dict(mha_state, params)
    tokens_BT = jax.random.randint(jax.random.key(4), (2, 20), 0, cfg.vocab_size)
    got, _ = jax.jit(lambda s: nnx.merge(graphdef, s)(tokens_BT))(state)
    want, _ = jax.jit(lambda s: nnx.merge(mha_graphdef, s)(tokens_BT))(mha_state)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
