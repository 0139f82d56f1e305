"""FLOPs per token count each attention layer's real projections, checked against counts written out by hand and
against the weights of an initialised model."""

import dataclasses
import math

import pytest
from flax import nnx

from meshlm.model import attention, flops
from meshlm.model.config import ModelConfig
from meshlm.model.transformer import Transformer
from tests.model.helpers import MODERN, TINY

# D = 64, H = 8 heads of K = 8, L = 2 layers, F = 256, V = 128, T = 16.
SMALL = ModelConfig(vocab_size=128, n_ctx=16, n_layers=2, d_model=64, n_heads=8, d_mlp=256)
MLP_WEIGHTS = 64 * 256 + 256 * 64  # w_in [D, F], w_out [F, D]
HEAD_WEIGHTS = 64 * 128  # the tied head [D, V]
ATTENTION_FLOPS = 6 * 2 * 2 * 16 * (8 * 8)  # QK^T and AV over T keys at every query head, L layers

# Weights of one attention layer, projection by projection.
LAYERS = {
    "mha": ({}, 64 * 3 * 8 * 8 + 8 * 8 * 64),  # w_qkv [D, 3, H, K], w_out [H, K, D]
    "gqa, 1 kv head": (
        dict(attention_layer="gqa", n_kv_heads=1),
        64 * 8 * 8 + 64 * 2 * 1 * 8 + 8 * 8 * 64,  # w_q [D, H, K], w_kv [D, 2, G, K], w_out
    ),
    "gqa, 2 kv heads": (
        dict(attention_layer="gqa", n_kv_heads=2),
        64 * 8 * 8 + 64 * 2 * 2 * 8 + 8 * 8 * 64,
    ),
    "mla": (
        dict(attention_layer="mla", position="rotary", mla_latent_dim=32, mla_rope_dim=4),
        # w_q [D, H, K], w_down [D, C], w_k_rope [D, R], w_up_k [C, H, K - R], w_up_v [C, H, K], w_out
        64 * 8 * 8 + 64 * 32 + 64 * 4 + 32 * 8 * (8 - 4) + 32 * 8 * 8 + 8 * 8 * 64,
    ),
}


@pytest.mark.parametrize("changes, attention_weights", LAYERS.values(), ids=LAYERS.keys())
def test_flops_per_token_count_the_layers_projections(changes, attention_weights):
    f = flops.flops_per_token(dataclasses.replace(SMALL, **changes))
    assert f.matmul == 6 * (2 * (attention_weights + MLP_WEIGHTS) + HEAD_WEIGHTS)
    assert f.attention == ATTENTION_FLOPS


@pytest.mark.parametrize("changes, attention_weights", LAYERS.values(), ids=LAYERS.keys())
def test_the_hand_counts_are_the_initialised_models_weights(changes, attention_weights):
    model = nnx.eval_shape(lambda: Transformer(dataclasses.replace(SMALL, **changes), nnx.Rngs(0)))
    assert _weights(model.blocks.attn) == 2 * attention_weights  # stacked: [L, ...]


@pytest.mark.parametrize("name", attention.layer_names())
@pytest.mark.parametrize("base", [TINY, MODERN], ids=["gpt", "modern"])
def test_every_layer_counts_the_weights_it_creates(name, base):
    """Weights are the parameters named w_* (biases b_*, norm scales otherwise), as every built-in layer names them."""
    layer_cls = attention.layer(name)
    cfg = attention.check(dataclasses.replace(base, attention_layer=name, **layer_cls.example).validate())
    assert layer_cls.matmul_weights(cfg) == _weights(nnx.eval_shape(lambda: layer_cls(cfg, nnx.Rngs(0))))


def _weights(module: nnx.Module) -> int:
    params = nnx.to_flat_state(nnx.state(module, nnx.Param))
    return sum(math.prod(v.shape) for path, v in params if str(path[-1]).startswith("w_"))
