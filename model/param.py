"""Parameter creation: every weight names its logical axes (`axes=`), which parallel/ maps to mesh axes."""

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model.config import ModelConfig


def param(
    rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], cfg: ModelConfig, std: float | None = None
) -> nnx.Param:
    """A weight drawn from N(0, std) (GPT-2/3 init); std=None gives zeros (biases)."""
    dtype = jnp.dtype(cfg.param_dtype)
    value = jnp.zeros(shape, dtype) if std is None else std * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, axes=axes)
