"""muP (model/mup.py): hidden weights start smaller as the width grows and nothing else does, attention logits are
q.k / d_head, the logits are divided by the width multiplier, and at its base width muP is the standard model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model import attention, mup
from meshlm.model.attention.layer_base import ScaledQueries
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer
from tests.model.helpers import MODERN, TINY

BASE = TINY.d_model  # 32, 4 heads of 8


def mup_cfg(width: int, base=TINY, **changes):
    return dataclasses.replace(base, d_model=width, parametrization="mup", mup_base_width=BASE, **changes)


def test_hidden_weights_start_smaller_by_sqrt_of_the_width_multiplier_and_nothing_else_does():
    m = 4  # width 128
    model = Transformer(mup_cfg(BASE * m, tie_embeddings=False), nnx.Rngs(0))
    std = lambda p: float(np.std(p[...]))
    hidden = 0.02 / np.sqrt(m)
    assert std(model.blocks.mlp.w_in) == pytest.approx(hidden, rel=0.03)
    assert std(model.blocks.attn.w_qkv) == pytest.approx(hidden, rel=0.03)
    residual = hidden / np.sqrt(2 * TINY.n_layers)  # GPT-2's residual scaling stays on top
    assert std(model.blocks.mlp.w_out) == pytest.approx(residual, rel=0.03)
    assert std(model.blocks.attn.w_out) == pytest.approx(residual, rel=0.03)
    for table in (model.embed, model.pos_embed, model.unembed):
        assert std(table) == pytest.approx(0.02, rel=0.03)
    assert np.all(model.blocks.mlp.b_in[...] == 0) and np.all(model.blocks.attn_norm.scale[...] == 1)


def test_hidden_weights_carry_the_lr_multiplier_one_over_m_and_nothing_else_does():
    scales = mup.lr_scales(Transformer(mup_cfg(BASE * 4, base=MODERN), nnx.Rngs(0)))
    flat = {"/".join(k.key for k in path): s for path, s in jax.tree_util.tree_leaves_with_path(scales)}
    hidden = {k for k, v in flat.items() if v == 0.25}
    assert hidden == {
        "blocks/attn/w_qkv",
        "blocks/attn/w_out",
        "blocks/mlp/w_in",
        "blocks/mlp/w_gate",
        "blocks/mlp/w_out",
    }
    assert {v for k, v in flat.items() if k not in hidden} == {1.0}  # embed, unembed, norm and qk-norm scales


def _attention_by_hand(layer, x_BTD, K_base: int):
    """mha's attention written out, with muP's logits q.k sqrt(K_base) / K."""
    qkv_3BHTK = jnp.einsum("btd,dchk->cbhtk", x_BTD, layer.w_qkv[...]) + layer.b_qkv[...][:, None, :, None]
    q_BHTK, k_BHTK, v_BHTK = qkv_3BHTK
    K, T = q_BHTK.shape[-1], x_BTD.shape[1]
    logits_BHTS = jnp.einsum("bhtk,bhsk->bhts", q_BHTK, k_BHTK) * np.sqrt(K_base) / K
    logits_BHTS = jnp.where(jnp.tril(jnp.ones((T, T), bool)), logits_BHTS, -jnp.inf)
    out_BHTK = jnp.einsum("bhts,bhsk->bhtk", jax.nn.softmax(logits_BHTS, axis=-1), v_BHTK)
    return layer.project_out(out_BHTK)


def test_attention_logits_are_q_dot_k_over_d_head():
    cfg = mup_cfg(BASE * 4)  # d_head 32, 8 at the base width
    layer = attention.layer("mha")(cfg, nnx.Rngs(0))
    # Larger queries than the init gives, so that a wrong scale moves the softmax visibly.
    layer.w_qkv[...] = layer.w_qkv[...] * 30
    x_BTD = jax.random.normal(jax.random.key(1), (2, 6, cfg.d_model))
    mask = attention.AttentionMask.causal(2, 6)
    positions_BT = jnp.broadcast_to(jnp.arange(6), (2, 6))
    out_BTD, _ = layer(x_BTD, positions_BT, mask, None, 0)
    np.testing.assert_allclose(out_BTD, _attention_by_hand(layer, x_BTD, K_base=8), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out_BTD, _attention_by_hand(layer, x_BTD, K_base=32), rtol=1e-3)  # 1/sqrt(d_head)


@pytest.mark.parametrize("name", attention.layer_names())
def test_every_attention_layer_hands_its_kernel_scaled_queries(name):
    build = lambda cfg: nnx.eval_shape(lambda: attention.layer(name)(cfg, nnx.Rngs(0)))  # shapes only
    example = {k: v for k, v in attention.layer(name).example.items() if k != "mla_latent_dim"}
    layer = build(mup_cfg(BASE * 4, **example))
    assert isinstance(layer.attend, ScaledQueries) and layer.attend.factor == 0.5  # 4 ** -0.5
    assert not isinstance(build(dataclasses.replace(TINY, **attention.layer(name).example)).attend, ScaledQueries)


@pytest.mark.parametrize("tied", [True, False])
def test_logits_are_divided_by_the_width_multiplier(tied):
    model = Transformer(mup_cfg(BASE * 4, tie_embeddings=tied), nnx.Rngs(0))
    x_2D = jax.random.normal(jax.random.key(1), (2, BASE * 4))
    w_DV = model.embed[...].T if tied else model.unembed[...]
    np.testing.assert_allclose(model.head(x_2D), x_2D @ w_DV / 4, rtol=1e-5)


@pytest.mark.parametrize("base", [TINY, MODERN], ids=["gpt", "modern"])
def test_at_its_base_width_mup_is_the_standard_model_bit_for_bit(base):
    tokens_BT = jax.random.randint(jax.random.key(1), (2, 12), 0, base.vocab_size)
    outputs = []
    for cfg in (base, mup_cfg(BASE, base=base)):
        graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
        logits_BTV, _ = jax.jit(lambda p, g=graphdef: nnx.merge(g, p)(tokens_BT))(params)
        outputs.append((nnx.to_pure_dict(params), logits_BTV))
    (p0, l0), (p1, l1) = outputs
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), p0, p1))
    assert jnp.array_equal(l0, l1)


def test_the_standard_model_has_no_mup_pieces():
    model = Transformer(TINY, nnx.Rngs(0))
    assert TINY.parametrization == "standard" and mup.lr_scales(model) is None
    assert not isinstance(model.blocks.attn.attend, ScaledQueries)
    assert (TINY.width_mult, TINY.query_mult, TINY.output_mult) == (1.0, 1.0, 1.0)
    # The base width is ignored outside muP.
    assert dataclasses.replace(TINY, mup_base_width=7).output_mult == 1.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mup_base_width": 0}, "needs the width its hyper-parameters were tuned at"),
        ({"d_mlp": 100}, "set model.d_mlp=0"),
        ({"attention_layer": "mla", "mla_latent_dim": 16}, "set model.mla_latent_dim=0"),
        ({"parametrization": "sp"}, "model.parametrization='sp' is not one of standard, mup"),
    ],
)
def test_mup_configs_that_cannot_scale_fail_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(mup_cfg(BASE * 2), **changes).validate()
