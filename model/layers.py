"""The pieces of a Transformer block. Every parameter names its logical axes (`axes=`) for parallel/."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model import attention
from meshlm.model.attention import AttentionMask
from meshlm.model.config import ModelConfig


def param(
    rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], cfg: ModelConfig, std: float | None = None
) -> nnx.Param:
    """A weight drawn from N(0, std) (GPT-2/3 init); std=None gives zeros (biases)."""
    dtype = jnp.dtype(cfg.param_dtype)
    value = jnp.zeros(shape, dtype) if std is None else std * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, axes=axes)


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


class HeadNorm(nnx.Module):
    """qk-layernorm: RMSNorm over each head's features, a scale per feature."""

    def __init__(self, cfg: ModelConfig):
        self.eps = cfg.norm_eps
        self.scale = nnx.Param(jnp.ones((cfg.head_dim,), cfg.param_dtype), axes=("kv",))

    def __call__(self, x_BTHK: jax.Array) -> jax.Array:
        x = x_BTHK.astype(jnp.float32)
        y = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.scale[...]
        return y.astype(x_BTHK.dtype)


def rotary(x_BTHK: jax.Array, positions_BT: jax.Array, theta: float) -> jax.Array:
    """Rotate feature pairs (i, i + K/2) by position-dependent angles (GPT-NeoX layout)."""
    half = x_BTHK.shape[-1] // 2
    freq_F = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BTF = positions_BT[..., None].astype(jnp.float32) * freq_F
    sin_BT1F, cos_BT1F = jnp.sin(angle_BTF)[:, :, None], jnp.cos(angle_BTF)[:, :, None]
    x1, x2 = jnp.split(x_BTHK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos_BT1F - x2 * sin_BT1F, x2 * cos_BT1F + x1 * sin_BT1F], axis=-1)
    return out.astype(x_BTHK.dtype)


class SelfAttention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        H, K, D = cfg.n_heads, cfg.head_dim, cfg.d_model
        self.cfg = cfg
        self.attend = attention.get(cfg.attention)
        self.w_qkv = param(rngs, (D, 3, H, K), ("embed", "qkv", "heads", "kv"), cfg, cfg.init_std)
        self.b_qkv = param(rngs, (3, H, K), ("qkv", "heads", "kv"), cfg) if cfg.bias else None
        self.w_out = param(rngs, (H, K, D), ("heads", "kv", "embed"), cfg, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_out = param(rngs, (D,), ("embed",), cfg) if cfg.bias else None
        self.q_norm = HeadNorm(cfg) if cfg.qk_norm else None
        self.k_norm = HeadNorm(cfg) if cfg.qk_norm else None

    def __call__(self, x_BTD, positions_BT, mask: AttentionMask, kv_cache=None, cache_index=None):
        """With a cache, the new keys and values are written at `cache_index` and queries see the whole cache."""
        dtype = x_BTD.dtype
        qkv_BT3HK = jnp.einsum("btd,dchk->btchk", x_BTD, self.w_qkv[...].astype(dtype))
        if self.b_qkv is not None:
            qkv_BT3HK = qkv_BT3HK + self.b_qkv[...].astype(dtype)
        q_BTHK, k_BTHK, v_BTHK = qkv_BT3HK[:, :, 0], qkv_BT3HK[:, :, 1], qkv_BT3HK[:, :, 2]
        if self.q_norm is not None:
            q_BTHK, k_BTHK = self.q_norm(q_BTHK), self.k_norm(k_BTHK)
        if self.cfg.position == "rotary":
            q_BTHK = rotary(q_BTHK, positions_BT, self.cfg.rope_theta)
            k_BTHK = rotary(k_BTHK, positions_BT, self.cfg.rope_theta)
        if kv_cache is not None:
            k_cache_BSHK, v_cache_BSHK = kv_cache
            k_BTHK = jax.lax.dynamic_update_slice_in_dim(
                k_cache_BSHK, k_BTHK.astype(k_cache_BSHK.dtype), cache_index, axis=1
            )
            v_BTHK = jax.lax.dynamic_update_slice_in_dim(
                v_cache_BSHK, v_BTHK.astype(v_cache_BSHK.dtype), cache_index, axis=1
            )
            kv_cache = (k_BTHK, v_BTHK)
        out_BTHK = self.attend(q_BTHK, k_BTHK.astype(dtype), v_BTHK.astype(dtype), mask)
        out_BTD = jnp.einsum("bthk,hkd->btd", out_BTHK, self.w_out[...].astype(dtype))
        if self.b_out is not None:
            out_BTD = out_BTD + self.b_out[...].astype(dtype)
        return out_BTD, kv_cache


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
        self.attn = SelfAttention(cfg, rngs)
        self.mlp_norm = Norm(cfg, rngs)
        self.mlp = Mlp(cfg, rngs)

    def __call__(self, x_BTD, positions_BT, mask, kv_cache=None, cache_index=None, dropout_key=None):
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        attn_BTD, kv_cache = self.attn(self.attn_norm(x_BTD), positions_BT, mask, kv_cache, cache_index)
        x_BTD = x_BTD + dropout(attn_BTD, self.dropout_rate, keys[0])
        x_BTD = x_BTD + dropout(self.mlp(self.mlp_norm(x_BTD)), self.dropout_rate, keys[1])
        return x_BTD, kv_cache
