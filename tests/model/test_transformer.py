import dataclasses
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model import attention
from meshlm.model.config import REMATS, ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import REMAT_POLICIES, Transformer, logical_axes
from tests.model.helpers import MODERN, TINY, jit_forward

KNOWN_AXES = {"layers", "vocab", "embed", "ctx", "qkv", "heads", "kv", "mlp"}


@pytest.mark.parametrize("cfg", [TINY, MODERN], ids=["gpt", "modern"])
def test_every_parameter_names_one_logical_axis_per_dimension(cfg):
    model = Transformer(cfg, nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    axes = logical_axes(model)
    for x, names in zip(jax.tree.leaves(params), jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))):
        assert len(names) == x.ndim and set(names) <= KNOWN_AXES


def test_options_change_the_parameter_set():
    names = lambda cfg: {
        "/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param))
    }
    gpt, modern = names(TINY), names(MODERN)
    assert "pos_embed" in gpt and "pos_embed" not in modern  # rotary has no table
    assert "unembed" in modern and "unembed" not in gpt  # untied head
    assert "blocks/mlp/w_gate" in modern and "blocks/attn/q_norm/scale" in modern
    assert not any(n.endswith("bias") or "/b_" in n for n in modern)


def test_gpt2_init_scales_residual_projections():
    cfg = dataclasses.replace(TINY, n_layers=8, d_model=256, n_heads=4)
    model = Transformer(cfg, nnx.Rngs(0))
    assert np.std(model.blocks.mlp.w_in[...]) == pytest.approx(0.02, rel=0.05)
    assert np.std(model.blocks.mlp.w_out[...]) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert np.std(model.blocks.attn.w_out[...]) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert np.all(model.blocks.mlp.b_in[...] == 0) and np.all(model.blocks.attn_norm.scale[...] == 1)


def test_layers_are_initialised_independently():
    model = Transformer(TINY, nnx.Rngs(0))
    w = model.blocks.mlp.w_in[...]
    assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize(
    "change",
    [
        {"remat": "full"},
        {"remat": "dots_saveable"},
        {"scan_layers": False},
        {"scan_layers": False, "remat": "dots_with_no_batch_dims_saveable"},
    ],
    ids=str,
)
def test_remat_and_unrolled_layers_give_identical_loss_and_gradients(change):
    tokens_BT = jax.random.randint(jax.random.key(0), (2, 12), 0, TINY.vocab_size)

    def grads(cfg):
        model = Transformer(cfg, nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        def loss(params):
            logits_BTV, _ = nnx.merge(graphdef, params)(tokens_BT)
            return -jnp.mean(jax.nn.log_softmax(logits_BTV)[..., 0])

        return jax.jit(jax.value_and_grad(loss))(params)

    (l0, g0), (l1, g1) = grads(TINY), grads(dataclasses.replace(TINY, **change))
    assert float(l0) == pytest.approx(float(l1), rel=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_every_remat_option_has_a_policy():
    assert set(REMAT_POLICIES) == set(REMATS) - {"none"}  # "none" runs the block as it is


def _matmul_dtypes(fn, *args) -> set:
    """The operand dtypes of every dot_general in fn's jaxpr, nested scans and jits included."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield from (v.aval.dtype for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from walk(sub)

    return set(walk(jax.make_jaxpr(fn)(*args).jaxpr))


@pytest.mark.parametrize("base", [TINY, MODERN], ids=["gpt", "modern"])
def test_bf16_compute_runs_every_matmul_in_bf16_and_stays_within_rounding_of_f32(base):
    tokens_BT = jax.random.randint(jax.random.key(0), (4, 32), 0, base.vocab_size)
    f32_model = Transformer(base, nnx.Rngs(0))
    bf16_model = Transformer(dataclasses.replace(base, dtype="bfloat16"), nnx.Rngs(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16_model, nnx.Param)))  # params stay f32
    # bf16 is really used: every matmul (projections, attention scores and values, MLP, head) takes bf16 operands.
    assert _matmul_dtypes(lambda t: bf16_model(t)[0], tokens_BT) == {jnp.dtype(jnp.bfloat16)}
    assert _matmul_dtypes(lambda t: f32_model(t)[0], tokens_BT) == {jnp.dtype(jnp.float32)}
    lo_bf16, _ = jit_forward(bf16_model)(tokens_BT)
    lo_f32, _ = jit_forward(f32_model)(tokens_BT)
    assert lo_bf16.dtype == jnp.float32
    # bf16 keeps 8 significant bits: a rounding moves a value by at most 2^-9 of it, 2^-9 / sqrt(3) rms. The logits
    # see about a dozen roundings (each matmul's inputs, the residual adds); independent errors add in quadrature,
    # sqrt(12) x 2^-9 / sqrt(3) = 2^-8 of the logits' spread. Allow 4x that for growth through the layers; an error
    # under 2^-8 / 8 would mean the rounding never happened (f32 against f32 differs by ~1e-7).
    rms = float(jnp.sqrt(jnp.mean((lo_bf16 - lo_f32) ** 2)) / jnp.std(lo_f32))
    assert 2**-8 / 8 < rms < 4 * 2**-8, rms


def test_segment_ids_isolate_packed_documents():
    forward = jit_forward(Transformer(MODERN, nnx.Rngs(0)))
    a_T, b_T = jnp.arange(1, 7), jnp.arange(20, 26)
    packed_1T = jnp.concatenate([a_T, b_T])[None]
    segments_1T = jnp.array([[1] * 6 + [2] * 6])
    positions_1T = jnp.array([list(range(6)) * 2])
    packed, _ = forward(packed_1T, positions_1T, segments_1T)
    alone, _ = forward(b_T[None])
    np.testing.assert_allclose(packed[0, 6:], alone[0], atol=1e-5)


def test_dropout_is_active_only_with_a_key():
    cfg = dataclasses.replace(TINY, dropout=0.5)
    model = Transformer(cfg, nnx.Rngs(0))
    tokens_BT = jnp.arange(8)[None]
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda key: nnx.merge(graphdef, state)(tokens_BT, dropout_key=key)[0])
    g = jax.jit(lambda: nnx.merge(graphdef, state)(tokens_BT)[0])
    assert not np.allclose(f(jax.random.key(1)), f(jax.random.key(2)))
    np.testing.assert_allclose(g(), g())


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n_heads=5), "n_heads=5 does not divide"),
        (dict(attention="nope"), "unknown attention variant 'nope'"),
        (dict(norm="batchnorm"), "model.norm='batchnorm'"),
        (dict(position="rotary", d_head=7), "even head dim"),
    ],
)
def test_invalid_configs_fail_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        attention.check(dataclasses.replace(ModelConfig(), **changes).validate())


def test_branch_ids_without_positions_and_segments_are_refused():
    model = Transformer(TINY, nnx.Rngs(0))
    tokens_BT = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ConfigError, match="branch_ids_BT needs explicit positions and segment ids"):
        model(tokens_BT, segment_ids_BT=tokens_BT, branch_ids_BT=tokens_BT)
