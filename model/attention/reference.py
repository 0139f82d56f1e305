"""The definition every other softmax kernel is checked against: explicit einsums, softmax in f32."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel


def attend_with_lse(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask):
    """(out_BHTK, lse_BHT): the attention and each query's log-sum-exp of its logits, for ring attention."""
    B, H, T, K = q_BHTK.shape
    G, S = k_BGSK.shape[1], k_BGSK.shape[2]
    q_BGRTK = q_BHTK.reshape(B, G, H // G, T, K) * K**-0.5  # R = H / G query heads share each key/value head
    logits_BGRTS = jnp.einsum("bgrtk,bgsk->bgrts", q_BGRTK, k_BGSK).astype(jnp.float32)
    bias_BHTS = mask.bias_BHTS(H)
    if bias_BHTS is not None:
        logits_BGRTS = logits_BGRTS + bias_BHTS.reshape(B, G, H // G, T, S)
    logits_BGRTS = jnp.where(mask.dense_BTS()[:, None, None], logits_BGRTS, jnp.finfo(jnp.float32).min)
    probs_BGRTS = jax.nn.softmax(logits_BGRTS, axis=-1).astype(v_BGSK.dtype)
    out_BGRTK = jnp.einsum("bgrts,bgsk->bgrtk", probs_BGRTS, v_BGSK)
    lse_BHT = jax.nn.logsumexp(logits_BGRTS, axis=-1).reshape(B, H, T)
    return out_BGRTK.reshape(B, H, T, v_BGSK.shape[-1]), lse_BHT


@register_kernel("reference", block=attend_with_lse)
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    return attend_with_lse(q_BHTK, k_BGSK, v_BGSK, mask)[0]  # XLA drops the unused log-sum-exp
