"""The pieces of a Transformer block; attention comes from the registry in model/attention/ (model.attention_layer)."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model import attention
from meshlm.model.attention import AttentionMask, LayerCache
from meshlm.model.config import ModelConfig
from meshlm.model.param import param


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Norm(nnx.Module):
    """LayerNorm or RMSNorm, statistics in f32 whatever the compute dtype."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.rms, self.eps = cfg.norm == "rmsnorm", cfg.norm_eps
        self.scale = nnx.Param(jnp.ones((cfg.d_model,), cfg.param_dtype), axes=("embed",))
        self.bias = param(rngs, (cfg.d_model,), ("embed",), cfg) if cfg.bias and not self.rms else None

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x = x_BTD.astype(jnp.float32)
        if not self.rms:
            x = x - x.mean(-1, keepdims=True)
        y = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x_BTD.dtype)


class Mlp(nnx.Module):
    """GELU (GPT-2/3) or SwiGLU; the hidden width is model.d_mlp (default 4 d_model)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        D, F = cfg.d_model, cfg.mlp_dim
        self.swiglu = cfg.mlp == "swiglu"
        self.w_in = param(rngs, (D, F), ("embed", "mlp"), cfg, cfg.init_std)
        self.w_gate = param(rngs, (D, F), ("embed", "mlp"), cfg, cfg.init_std) if self.swiglu else None
        self.b_in = param(rngs, (F,), ("mlp",), cfg) if cfg.bias else None
        self.w_out = param(rngs, (F, D), ("mlp", "embed"), cfg, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_out = param(rngs, (D,), ("embed",), cfg) if cfg.bias else None

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        dtype = x_BTD.dtype
        h_BTF = x_BTD @ self.w_in[...].astype(dtype)
        if self.b_in is not None:
            h_BTF = h_BTF + self.b_in[...].astype(dtype)
        if self.swiglu:
            h_BTF = jax.nn.silu(x_BTD @ self.w_gate[...].astype(dtype)) * h_BTF
        else:
            h_BTF = jax.nn.gelu(h_BTF, approximate=True)
        out_BTD = h_BTF @ self.w_out[...].astype(dtype)
        if self.b_out is not None:
            out_BTD = out_BTD + self.b_out[...].astype(dtype)
        return out_BTD


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.dropout_rate = cfg.dropout
        self.attn_norm = Norm(cfg, rngs)
        self.attn = attention.layer(cfg.attention_layer)(cfg, rngs)
        self.mlp_norm = Norm(cfg, rngs)
        self.mlp = Mlp(cfg, rngs)

    def __call__(
        self,
        x_BTD: jax.Array,
        positions_BT: jax.Array,
        mask: AttentionMask,
        cache: LayerCache | None,
        layer_index: jax.Array,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, LayerCache | None]:
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        attn_BTD, cache = self.attn(self.attn_norm(x_BTD), positions_BT, mask, cache, layer_index)
        x_BTD = x_BTD + dropout(attn_BTD, self.dropout_rate, keys[0])
        x_BTD = x_BTD + dropout(self.mlp(self.mlp_norm(x_BTD)), self.dropout_rate, keys[1])
        return x_BTD, cache
