"""Blockwise attention in pure JAX (flash-attention style, Dao et al. 2022; Rabe & Staats 2021): queries in
blocks, and for each block an online softmax over blocks of keys keeps a running maximum, normaliser and
weighted sum, so no [T, S] matrix ever exists. Each query block is rematerialised in the backward pass, so
memory grows linearly with sequence length, forward and backward. Any mask, window, ALiBi and grouped-query."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel

Q_BLOCK = 512
KV_BLOCK = 512
_NEG = jnp.finfo(jnp.float32).min
_PAD_SEGMENT = -1  # padded keys and queries: no real query shares it, so padding is never seen


def attend_with_lse(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask):
    """(out_BHTK, lse_BHT): the attention and each query's log-sum-exp (running maximum + log normaliser), which
    ring attention combines across the blocks of keys it receives."""
    B, H, T, K = q_BHTK.shape
    G, S = k_BGSK.shape[1], k_BGSK.shape[2]
    bq, bk = min(Q_BLOCK, T), min(KV_BLOCK, S)
    q_BGRTK = _pad(q_BHTK.reshape(B, G, H // G, T, K) * K**-0.5, bq, axis=3)
    k_BGSK, v_BGSK = _pad(k_BGSK, bk, axis=2), _pad(v_BGSK, bk, axis=2)
    q_index_BT, q_segment_BT = _pad(mask.q_index_BT, bq, 1), _pad(mask.q_segment_BT, bq, 1, _PAD_SEGMENT - 1)
    kv_index_BS, kv_segment_BS = _pad(mask.kv_index_BS, bk, 1), _pad(mask.kv_segment_BS, bk, 1, _PAD_SEGMENT)
    branched = mask.q_branch_BT is not None  # padded branches are 0: padding's segment already hides it
    q_branch_BT = _pad(mask.q_branch_BT, bq, 1) if branched else None
    kv_branch_BS = _pad(mask.kv_branch_BS, bk, 1) if branched else None
    keys = (
        _blocks(k_BGSK, bk, axis=2),
        _blocks(v_BGSK, bk, axis=2),
        _blocks(kv_index_BS, bk, axis=1),
        _blocks(kv_segment_BS, bk, axis=1),
        None if kv_branch_BS is None else _blocks(kv_branch_BS, bk, axis=1),
    )

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def query_block(queries):
        q_BGRtK, q_index_Bt, q_segment_Bt, q_branch_Bt = queries
        R, t = q_BGRtK.shape[2], q_BGRtK.shape[3]

        def key_block(carry, block):
            max_BGRt, norm_BGRt, acc_BGRtK = carry
            k_BGsK, v_BGsK, kv_index_Bs, kv_segment_Bs, kv_branch_Bs = block
            sub = dataclasses.replace(
                mask,
                q_index_BT=q_index_Bt,
                kv_index_BS=kv_index_Bs,
                q_segment_BT=q_segment_Bt,
                kv_segment_BS=kv_segment_Bs,
                q_branch_BT=q_branch_Bt,
                kv_branch_BS=kv_branch_Bs,
            )
            logits_BGRts = jnp.einsum("bgrtk,bgsk->bgrts", q_BGRtK, k_BGsK).astype(jnp.float32)
            bias_BHts = sub.bias_BHTS(H)
            if bias_BHts is not None:
                logits_BGRts = logits_BGRts + bias_BHts.reshape(logits_BGRts.shape)
            logits_BGRts = jnp.where(sub.dense_BTS()[:, None, None], logits_BGRts, _NEG)
            new_max_BGRt = jnp.maximum(max_BGRt, logits_BGRts.max(-1))
            probs_BGRts = jnp.exp(logits_BGRts - new_max_BGRt[..., None])
            rescale_BGRt = jnp.exp(max_BGRt - new_max_BGRt)
            norm_BGRt = norm_BGRt * rescale_BGRt + probs_BGRts.sum(-1)
            update_BGRtK = jnp.einsum("bgrts,bgsk->bgrtk", probs_BGRts.astype(v_BGsK.dtype), v_BGsK)
            acc_BGRtK = acc_BGRtK * rescale_BGRt[..., None] + update_BGRtK.astype(jnp.float32)
            return (new_max_BGRt, norm_BGRt, acc_BGRtK), None

        start = (
            jnp.full((B, G, R, t), _NEG, jnp.float32),
            jnp.zeros((B, G, R, t), jnp.float32),
            jnp.zeros((B, G, R, t, v_BGSK.shape[-1]), jnp.float32),
        )
        (max_BGRt, norm_BGRt, acc_BGRtK), _ = jax.lax.scan(key_block, start, keys)
        return (acc_BGRtK / norm_BGRt[..., None]).astype(v_BGSK.dtype), max_BGRt + jnp.log(norm_BGRt)

    queries = (
        _blocks(q_BGRTK, bq, axis=3),
        _blocks(q_index_BT, bq, axis=1),
        _blocks(q_segment_BT, bq, axis=1),
        None if q_branch_BT is None else _blocks(q_branch_BT, bq, axis=1),
    )
    out_NBGRtK, lse_NBGRt = jax.lax.map(query_block, queries)
    out_BGRTK = jnp.moveaxis(out_NBGRtK, 0, 3).reshape(B, G, H // G, -1, v_BGSK.shape[-1])
    lse_BGRT = jnp.moveaxis(lse_NBGRt, 0, 3).reshape(B, G, H // G, -1)
    return out_BGRTK[:, :, :, :T].reshape(B, H, T, -1), lse_BGRT[..., :T].reshape(B, H, T)


@register_kernel("blockwise", block=attend_with_lse)
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    return attend_with_lse(q_BHTK, k_BGSK, v_BGSK, mask)[0]


def _pad(x: jax.Array, block: int, axis: int, value=0) -> jax.Array:
    extra = -x.shape[axis] % block
    return jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)], constant_values=value)


def _blocks(x: jax.Array, block: int, axis: int) -> jax.Array:
    """x split along `axis` into blocks, the block number first (what scan and map iterate over)."""
    shape = x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1 :]
    return jnp.moveaxis(x.reshape(shape), axis, 0)
