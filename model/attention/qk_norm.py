"""qk-layernorm: RMSNorm over each head's features, a scale per feature."""

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model.config import ModelConfig


class HeadNorm(nnx.Module):
    def __init__(self, cfg: ModelConfig, features: int | None = None):
        self.eps = cfg.norm_eps
        self.scale = nnx.Param(jnp.ones((features or cfg.head_dim,), cfg.param_dtype), axes=("kv",))

    def __call__(self, x: jax.Array) -> jax.Array:
        f = x.astype(jnp.float32)
        y = f * jax.lax.rsqrt((f * f).mean(-1, keepdims=True) + self.eps) * self.scale[...]
        return y.astype(x.dtype)
