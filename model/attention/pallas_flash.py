"""`pallas_flash`: the GPU flash-attention Pallas kernel (jax.experimental.pallas.ops.gpu, lowered through Triton).
Serves causal training with packed segments at lengths that are multiples of its 128-token blocks; other masks
(decoding, windows, ALiBi) go to `fused`, which is also the path to cuDNN's flash attention. Off GPU the kernel
runs in Pallas interpret mode, which is how the shared suite checks it on CPU."""

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import attention as pallas_attention

from meshlm.model.attention import fused
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel

BLOCK = 128  # the default forward blocks of the kernel


@register_kernel("pallas_flash", platforms=("gpu",))
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    B, H, T, K = q_BHTK.shape
    G = k_BGSK.shape[1]
    if not mask.segments_only or T % BLOCK or K > 256:
        return fused.attend(q_BHTK, k_BGSK, v_BGSK, mask)
    # The kernel wants [batch, time, heads, features] and as many key/value heads as query heads.
    q_BTHK = q_BHTK.transpose(0, 2, 1, 3)
    k_BTHK, v_BTHK = (jnp.repeat(x, H // G, axis=1).transpose(0, 2, 1, 3) for x in (k_BGSK, v_BGSK))
    out_BTHK = pallas_attention.mha(
        q_BTHK,
        k_BTHK,
        v_BTHK,
        None if mask.plain_causal else mask.q_segment_BT,
        sm_scale=K**-0.5,
        causal=True,
        block_sizes=pallas_attention.BlockSizes.get_default(),
        interpret=jax.default_backend() != "gpu",
    )
    return out_BTHK.transpose(0, 2, 1, 3)
