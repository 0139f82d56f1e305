"""Parameter creation: every weight names its logical axes (`axes=`), which parallel/ maps to mesh axes."""

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model import mup
from meshlm.model.config import ModelConfig


def param(
    rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], cfg: ModelConfig, std: float | None = None
) -> nnx.Param:
    """A weight drawn from N(0, std) (GPT-2/3 init); std=None gives zeros (biases). Under muP a hidden weight's std
    shrinks as 1/sqrt(m) and it carries its Adam LR multiplier 1/m (model/mup.py)."""
    dtype = jnp.dtype(cfg.param_dtype)
    metadata = {}
    if std is not None and cfg.parametrization == "mup" and mup.is_hidden(axes):
        std, metadata = std * cfg.width_mult**-0.5, {"lr_scale": 1.0 / cfg.width_mult}
    value = jnp.zeros(shape, dtype) if std is None else std * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, axes=axes, **metadata)
