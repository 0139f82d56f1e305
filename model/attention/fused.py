"""`jax.nn.dot_product_attention`: cuDNN flash attention on NVIDIA GPUs where it applies, XLA's softmax elsewhere."""

import jax
import jax.numpy as jnp

from meshlm.model.attention import AttentionMask, register


def _implementation(q_BTHK: jax.Array) -> str | None:
    """'cudnn' for causal training on a CUDA GPU in half precision with a head dim cuDNN takes; None (= XLA) otherwise,
    since jax picks XLA whenever it is not asked for cuDNN."""
    device = jax.devices()[0]
    on_cuda = device.platform == "gpu" and "cuda" in getattr(device.client, "platform_version", "").lower()
    head_dim = q_BTHK.shape[-1]
    if on_cuda and q_BTHK.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return None


@register("fused")
def attend(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: AttentionMask) -> jax.Array:
    if mask.plain_causal:
        return jax.nn.dot_product_attention(
            q_BTHK, k_BSHK, v_BSHK, is_causal=True, implementation=_implementation(q_BTHK)
        )
    return jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask=mask.dense_BTS()[:, None])
