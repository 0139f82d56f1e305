"""`jax.nn.dot_product_attention`: cuDNN flash attention on GPUs, XLA's fused softmax elsewhere."""

import jax

from meshlm.model.attention import AttentionMask, register


@register("fused")
def attend(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: AttentionMask) -> jax.Array:
    if mask.plain_causal:
        return jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK, is_causal=True)
    return jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask=mask.dense_BTS()[:, None])
