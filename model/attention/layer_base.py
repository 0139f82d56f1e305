"""What attention layers share: the output projection, the position scheme, the cache round trip, the kernel call.

A layer subclasses `AttentionLayer`, creates its projections in __init__ (and `init_output`), and in __call__ turns
x_BTD into heads-major queries, keys and values, passes what it caches `through_cache`, then calls `self.attend` and
`self.project_out`. Class attributes say what its cache holds and how the shared suite checks it; `matmul_weights`,
how many weights a token multiplies (for FLOPs).
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model import layout
from meshlm.model.attention import registry
from meshlm.model.attention.kv_cache import LayerCache
from meshlm.model.config import ModelConfig
from meshlm.model.param import param


def project_to_heads(x_BTD: jax.Array, w: jax.Array, spec: str) -> jax.Array:
    """x_BTD times a weight whose first axis is d_model, laid out as `spec` says ("dchk->cbhtk": weight axes, then
    the output's, with b and t). For one token (decoding) the product lands as the weight lies and only the small
    result moves: asked for heads-major, XLA would transpose the whole weight at every token."""
    w_axes, out_axes = spec.split("->")
    if x_BTD.shape[1] != 1:
        return jnp.einsum(f"btd,{spec}", x_BTD, w)
    time_major = "bt" + w_axes[1:]
    y = jnp.einsum(f"btd,{w_axes}->{time_major}", x_BTD, w)
    return y.transpose([time_major.index(axis) for axis in out_axes])


@dataclasses.dataclass(frozen=True)
class ScaledQueries:
    """A kernel whose queries are multiplied first: every kernel scales q.k by 1/sqrt(d_head) itself, so muP's
    scale (model.query_mult) reaches all of them, Pallas ones included, with no kernel knowing of it. A frozen
    dataclass, so that equal configs give equal graphdefs."""

    kernel: registry.KernelFn
    factor: float

    def __call__(self, q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask) -> jax.Array:
        return self.kernel(q_BHTK * self.factor, k_BGSK, v_BGSK, mask)


@dataclasses.dataclass(frozen=True)
class AcrossDevices:
    """A kernel called through the active layout, which runs it across the devices of a context-parallel mesh when
    the sequence is spread over them (model/layout.py: attend), and calls it as it is otherwise."""

    kernel: registry.KernelFn

    def __call__(self, q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask) -> jax.Array:
        return layout.attend(self.kernel, q_BHTK, k_BGSK, v_BGSK, mask)


class AttentionLayer(nnx.Module):
    ring: ClassVar[bool] = False  # a ring-buffer cache of cache_slots() slots that overwrites its oldest
    # Config overrides that exercise the variant on a tiny model (the shared suite uses them; so can users).
    example: ClassVar[dict] = {}
    # Config overrides under which the layer computes exactly what `mha` computes (after `mha_params`); None = never.
    reduces_to_mha: ClassVar[dict | None] = None

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        """Raise ConfigError for options this layer cannot take."""

    @classmethod
    def cache_shapes(cls, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Per token and layer: {array name: (heads, features...)}."""
        raise NotImplementedError

    @classmethod
    def cache_slots(cls, cfg: ModelConfig, length: int) -> int:
        return length

    matmul_formula = "its matmul_weights"  # matmul_weights as text, for the FLOP formula that info and bench print

    @classmethod
    def matmul_weights(cls, cfg: ModelConfig) -> int:
        """Weights each token multiplies in one layer, the output projection's included (model/flops.py counts
        6 training FLOPs per weight)."""
        raise NotImplementedError(f"{cls.__name__} must define matmul_weights(cfg) for FLOPs and MFU to be counted")

    @staticmethod
    def mha_params(params: dict) -> dict:
        """This layer's parameters (a pure dict) in `mha`'s layout, where `reduces_to_mha` applies."""
        return params

    def init_output(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        H, K, D = cfg.n_heads, cfg.head_dim, cfg.d_model
        self.cfg = cfg
        kernel = AcrossDevices(registry.kernel(cfg.attention))
        self.attend = kernel if cfg.query_mult == 1.0 else ScaledQueries(kernel, cfg.query_mult)
        self.w_out = param(rngs, (H, K, D), ("heads", "kv", "embed"), cfg, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_out = param(rngs, (D,), ("embed",), cfg) if cfg.bias else None

    @staticmethod
    def through_cache(
        kv: dict[str, jax.Array], cache: LayerCache | None, dtype
    ) -> tuple[dict[str, jax.Array], LayerCache | None]:
        """`kv` ([B, heads, T, ...] per array) written into the cache, and what the queries read: the whole cache."""
        if cache is not None:
            kv, cache = cache.update(kv)
        return {name: x.astype(dtype) for name, x in kv.items()}, cache

    def project_out(self, out_BHTK: jax.Array) -> jax.Array:
        out_BTD = jnp.einsum("bhtk,hkd->btd", out_BHTK, self.w_out[...].astype(out_BHTK.dtype))
        if self.b_out is not None:
            out_BTD = out_BTD + self.b_out[...].astype(out_BTD.dtype)
        return out_BTD
