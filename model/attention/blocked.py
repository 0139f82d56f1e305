"""Causal attention by query blocks: each block of queries meets only the keys at or before it, so the masked
upper triangle (3/8 of the square at 4 blocks) is never computed. The plain causal mask comes from iota compares,
nothing materialised per batch row; other aligned masks (packed segments, shared prefixes, windows, ALiBi) are
sliced per block. For CPUs; masks against a cache take the dense path."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel

MIN_BLOCK = 64  # smaller blocks make XLA's batched matmuls too small to pay for themselves
MAX_BLOCKS = 8


def attend_with_lse(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask):
    """(out_BHTK, lse_BHT): the attention and each query's log-sum-exp, for ring attention."""
    B, H, T, K = q_BHTK.shape
    G = k_BGSK.shape[1]
    q_BGRTK = q_BHTK.reshape(B, G, H // G, T, K) * K**-0.5
    bias_BHTS = mask.bias_BHTS(H)
    bias = None if bias_BHTS is None else bias_BHTS.reshape(B, G, H // G, T, -1)
    if not mask.aligned or T % MIN_BLOCK or T < 2 * MIN_BLOCK or k_BGSK.shape[2] != T:
        out_BGRTK, lse_BGRT = _softmax_attend(q_BGRTK, k_BGSK, v_BGSK, mask.dense_BTS()[:, None, None], bias)
        return out_BGRTK.reshape(B, H, T, -1), lse_BGRT.reshape(B, H, T)
    block = max(MIN_BLOCK, T // MAX_BLOCKS)
    below_bb = jax.lax.broadcasted_iota(jnp.int32, (block, block), 0) >= jax.lax.broadcasted_iota(
        jnp.int32, (block, block), 1
    )
    visible_B11TS = None if mask.plain_causal else mask.dense_BTS()[:, None, None]
    outs = []
    for start in range(0, T, block):
        end = start + block
        if visible_B11TS is None:
            # Keys before the block are all visible; only the diagonal block needs the causal mask.
            visible = jnp.concatenate([jnp.ones((block, start), bool), below_bb], axis=1)
        else:
            visible = visible_B11TS[..., start:end, :end]
        q_block = q_BGRTK[:, :, :, start:end]
        block_bias = None if bias is None else bias[..., start:end, :end]
        outs.append(_softmax_attend(q_block, k_BGSK[:, :, :end], v_BGSK[:, :, :end], visible, block_bias))
    out_BGRTK, lse_BGRT = (jnp.concatenate(parts, axis=3) for parts in zip(*outs))
    return out_BGRTK.reshape(B, H, T, -1), lse_BGRT.reshape(B, H, T)


@register_kernel("blocked", block=attend_with_lse)
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    return attend_with_lse(q_BHTK, k_BGSK, v_BGSK, mask)[0]  # XLA drops the unused log-sum-exp


def _softmax_attend(q_BGRTK, k_BGSK, v_BGSK, visible, bias=None) -> tuple[jax.Array, jax.Array]:
    logits_BGRTS = jnp.einsum("bgrtk,bgsk->bgrts", q_BGRTK, k_BGSK).astype(jnp.float32)
    if bias is not None:
        logits_BGRTS = logits_BGRTS + bias
    logits_BGRTS = jnp.where(visible, logits_BGRTS, jnp.finfo(jnp.float32).min)
    probs_BGRTS = jax.nn.softmax(logits_BGRTS, axis=-1).astype(v_BGSK.dtype)
    return jnp.einsum("bgrts,bgsk->bgrtk", probs_BGRTS, v_BGSK), jax.nn.logsumexp(logits_BGRTS, axis=-1)
