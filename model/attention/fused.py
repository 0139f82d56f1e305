"""`jax.nn.dot_product_attention`: cuDNN flash attention on NVIDIA GPUs where it applies, XLA's softmax elsewhere."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel


def _implementation(q_BHTK: jax.Array) -> str | None:
    """'cudnn' for causal training on a CUDA GPU in half precision with a head dim cuDNN takes; None (= XLA) otherwise,
    since jax picks XLA whenever it is not asked for cuDNN."""
    device = jax.devices()[0]
    on_cuda = device.platform == "gpu" and "cuda" in getattr(device.client, "platform_version", "").lower()
    head_dim = q_BHTK.shape[-1]
    if on_cuda and q_BHTK.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return None


@register_kernel("fused")
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    # jax wants [batch, time, heads, features]; it takes G < H key/value heads as grouped-query attention.
    q_BTHK, k_BSGK, v_BSGK = (x.transpose(0, 2, 1, 3) for x in (q_BHTK, k_BGSK, v_BGSK))
    if mask.plain_causal and k_BGSK.shape[2] == q_BHTK.shape[2]:
        out_BTHK = jax.nn.dot_product_attention(
            q_BTHK, k_BSGK, v_BSGK, is_causal=True, implementation=_implementation(q_BHTK)
        )
    else:
        out_BTHK = jax.nn.dot_product_attention(
            q_BTHK, k_BSGK, v_BSGK, bias=mask.bias_BHTS(q_BHTK.shape[1]), mask=mask.dense_BTS()[:, None]
        )
    return out_BTHK.transpose(0, 2, 1, 3)
