"""The definition every other variant is checked against: explicit einsums, softmax in f32."""

import jax
import jax.numpy as jnp

from meshlm.model.attention import AttentionMask, register


@register("reference")
def attend(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: AttentionMask) -> jax.Array:
    scale = q_BTHK.shape[-1] ** -0.5
    logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK).astype(jnp.float32) * scale
    logits_BHTS = jnp.where(mask.dense_BTS()[:, None], logits_BHTS, jnp.finfo(jnp.float32).min)
    probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1).astype(v_BSHK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs_BHTS, v_BSHK)
