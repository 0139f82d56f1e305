"""Causal attention by query blocks: each block of queries meets only the keys at or before it, so the masked
upper triangle (3/8 of the square at 4 blocks) is never computed. Heads-major [B, H, T, K] layout, causal mask
from iota compares, nothing materialised per batch row. For CPUs; other masks take the dense path."""

import jax
import jax.numpy as jnp

from meshlm.model.attention import AttentionMask, register

MIN_BLOCK = 64  # smaller blocks make XLA's batched matmuls too small to pay for themselves
MAX_BLOCKS = 8


@register("blocked")
def attend(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: AttentionMask) -> jax.Array:
    T = q_BTHK.shape[1]
    q_BHTK, k_BHSK, v_BHSK = (x.transpose(0, 2, 1, 3) for x in (q_BTHK * q_BTHK.shape[-1] ** -0.5, k_BSHK, v_BSHK))
    if not mask.plain_causal or T % MIN_BLOCK or T < 2 * MIN_BLOCK:
        out_BHTK = _softmax_attend(q_BHTK, k_BHSK, v_BHSK, mask.dense_BTS()[:, None])
        return out_BHTK.transpose(0, 2, 1, 3)
    block = max(MIN_BLOCK, T // MAX_BLOCKS)
    below_bb = jax.lax.broadcasted_iota(jnp.int32, (block, block), 0) >= jax.lax.broadcasted_iota(
        jnp.int32, (block, block), 1
    )
    outs = []
    for start in range(0, T, block):
        end = start + block
        # Keys before the block are all visible; only the diagonal block needs the causal mask.
        visible_bS = jnp.concatenate([jnp.ones((block, start), bool), below_bb], axis=1)
        outs.append(_softmax_attend(q_BHTK[:, :, start:end], k_BHSK[:, :, :end], v_BHSK[:, :, :end], visible_bS))
    return jnp.concatenate(outs, axis=2).transpose(0, 2, 1, 3)


def _softmax_attend(q_BHTK, k_BHSK, v_BHSK, visible) -> jax.Array:
    logits_BHTS = jnp.einsum("bhtk,bhsk->bhts", q_BHTK, k_BHSK).astype(jnp.float32)
    logits_BHTS = jnp.where(visible, logits_BHTS, jnp.finfo(jnp.float32).min)
    probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1).astype(v_BHSK.dtype)
    return jnp.einsum("bhts,bhsk->bhtk", probs_BHTS, v_BHSK)
