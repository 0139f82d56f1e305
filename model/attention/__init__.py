"""Attention, organised as two extension points, each a registry of one-file variants.

- Kernels: how softmax(QK^T)V (or a substitute) is computed from given heads-major queries, keys and values,

      attend(q_BHTK, k_BGSK, v_BGSK, mask: AttentionMask) -> out_BHTK      (G key/value heads divide the H query heads)

  registered with `@register_kernel("name")` and chosen with `model.attention`.
- Layers: an nnx.Module that owns the projections and decides what the KV cache holds, registered with
  `@register_layer("name")` and chosen with `model.attention_layer`; it calls the configured kernel.

Every module in this folder is imported when a name is first looked up, so a new file is picked up with no other
edit. A variant in a user's own package is named by its import path (`model.attention=mypkg.my_attention`); the
module must register exactly one kernel (or layer). See docs/attention.md.
"""

from meshlm.model.attention.kv_cache import KVCache, LayerCache
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import (
    AUTO,
    BlockFn,
    KernelFn,
    block,
    check,
    is_exact,
    is_native,
    kernel,
    kernel_name,
    kernel_names,
    layer,
    layer_names,
    register_kernel,
    register_layer,
    takes_bias,
)

__all__ = [
    "AUTO",
    "AttentionMask",
    "BlockFn",
    "KVCache",
    "KernelFn",
    "LayerCache",
    "block",
    "check",
    "is_exact",
    "is_native",
    "kernel",
    "kernel_name",
    "kernel_names",
    "layer",
    "layer_names",
    "register_kernel",
    "register_layer",
    "takes_bias",
]
