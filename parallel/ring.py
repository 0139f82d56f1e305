"""Attention across the devices of the context axis, run inside its shard_map (parallel/context.py): each device
holds the queries, keys and values of its two chunks of the sequence (chunks i and 2n-1-i of 2n, in time order) and
an aligned mask of those tokens, whose indices are their true positions in the sequence.

Ring (Liu et al. 2023): the keys and values, with their indices and segments, travel around the ring of n devices
(n - 1 ppermutes); each device meets every block in turn and merges the results by their log-sum-exps (online
softmax), so no device ever holds more than two blocks of keys. The backward pass is written out (custom VJP) so it
sends the blocks around again with their gradients instead of keeping every block received. Thanks to the zig-zag
order, half of every block but a device's own is always masked and never computed, the same half on every device.

All-gather (Llama 3, section 3.3.2): the keys and values are gathered whole and the kernel runs on the local
queries against all of them; any kernel and mask, at the cost of holding every key."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from meshlm.model.attention import AttentionMask, BlockFn, KernelFn

_NEG = jnp.finfo(jnp.float32).min  # the log-sum-exp of a query that sees nothing in a block: a weight of 0
KV = tuple  # (k_BGSK, v_BGSK, kv_index_BS, kv_segment_BS, kv_branch_BS or None): what travels


def ring_attend(block: BlockFn, axis: str, n: int, q_BHCK, k_BGCK, v_BGCK, mask: AttentionMask) -> jax.Array:
    """softmax attention of this device's queries over the whole sequence's keys, by `block` on each pair. The
    steps are a scan, so one block's temporaries live at a time; each step sends the next block on before it
    computes, so the transfer can hide behind the compute."""
    own_step, other_step = _step_fns(block, axis)
    send = _sender(axis, n)
    # The forward pass is not differentiated (the backward is written out), so checkpointing its steps changes no
    # computation; it stops JAX from evaluating their constants (a kernel's masking value, broadcast to a block)
    # ahead of the layers' scan, where they would be stacked for every step of the ring.
    own_fwd, other_fwd = jax.checkpoint(own_step), jax.checkpoint(other_step)

    @jax.custom_vjp
    def attend(q_BHCK, k_BGCK, v_BGCK, mask):
        return forward(q_BHCK, k_BGCK, v_BGCK, mask)[0]

    def forward(q_BHCK, k_BGCK, v_BGCK, mask):
        own = (k_BGCK, v_BGCK, mask.kv_index_BS, mask.kv_segment_BS, mask.kv_branch_BS)
        arriving = send(own)
        o_BHCK, lse_BHC = own_fwd(q_BHCK, mask, own)

        def visit(carry, s):
            out_BHCK, total_BHC, kv = carry
            arriving = send(kv)
            o_BHCK, lse_BHC = other_fwd(s, q_BHCK, mask, kv)
            return (*_merge(out_BHCK, total_BHC, o_BHCK, lse_BHC), arriving), None

        start = (o_BHCK.astype(jnp.float32), lse_BHC, arriving)
        (out_BHCK, total_BHC, last), _ = jax.lax.scan(visit, start, jnp.arange(1, n - 1))
        out_BHCK, total_BHC = _merge(out_BHCK, total_BHC, *other_fwd(n - 1, q_BHCK, mask, last))
        return out_BHCK.astype(v_BGCK.dtype), (q_BHCK, k_BGCK, v_BGCK, mask, out_BHCK, total_BHC)

    def backward(saved, d_out_BHCK):
        q_BHCK, k_BGCK, v_BGCK, mask, out_BHCK, total_BHC = saved
        d_out_BHCK = d_out_BHCK.astype(jnp.float32)

        def gradients(step, kv):
            """(dq, dk, dv) of one block: out = sum_j w_j o_j with w_j = exp(lse_j - total), so the block's output
            gets w_j d_out and its log-sum-exp w_j <d_out, o_j - out>."""
            (o_BHCK, lse_BHC), block_vjp = jax.vjp(lambda q, k, v: step(q, mask, (k, v) + kv[2:]), q_BHCK, *kv[:2])
            w_BHC = jnp.exp(lse_BHC - total_BHC)
            d_o_BHCK = (w_BHC[..., None] * d_out_BHCK).astype(o_BHCK.dtype)
            d_lse_BHC = w_BHC * jnp.sum(d_out_BHCK * (o_BHCK.astype(jnp.float32) - out_BHCK), axis=-1)
            return block_vjp((d_o_BHCK, d_lse_BHC))

        own = (k_BGCK, v_BGCK, mask.kv_index_BS, mask.kv_segment_BS, mask.kv_branch_BS)
        arriving = send(own)
        dq_BHCK, dk_BGCK, dv_BGCK = gradients(own_step, own)
        # Each block's gradient travels with it, one step behind its keys.
        start = (
            dq_BHCK.astype(jnp.float32),
            arriving,
            send((dk_BGCK.astype(jnp.float32), dv_BGCK.astype(jnp.float32))),
        )

        def visit(carry, s):
            dq_BHCK, kv, (dk_BGCK, dv_BGCK) = carry
            arriving = send(kv)
            dq, dk, dv = gradients(lambda *args: other_step(s, *args), kv)
            return (dq_BHCK + dq, arriving, send((dk_BGCK + dk, dv_BGCK + dv))), None

        (dq_BHCK, last, (dk_BGCK, dv_BGCK)), _ = jax.lax.scan(visit, start, jnp.arange(1, n - 1))
        dq, dk, dv = gradients(lambda *args: other_step(n - 1, *args), last)
        # The last block held is the next device's, its gradient now complete: one more pass sends it home.
        dk_BGCK, dv_BGCK = send((dk_BGCK + dk, dv_BGCK + dv))
        return (dq_BHCK + dq).astype(q_BHCK.dtype), dk_BGCK.astype(k_BGCK.dtype), dv_BGCK.astype(v_BGCK.dtype), None

    attend.defvjp(forward, backward)
    return attend(q_BHCK, k_BGCK, v_BGCK, mask)


def all_gather_attend(kernel: KernelFn, axis: str, q_BHCK, k_BGCK, v_BGCK, mask: AttentionMask) -> jax.Array:
    """The kernel on this device's queries against every key of the sequence, gathered (in the devices' order: the
    indices carry time, so order does not matter)."""

    def gather(x, dim: int):
        return None if x is None else jax.lax.all_gather(x, axis, axis=dim, tiled=True)

    every_key = dataclasses.replace(
        mask,
        kv_index_BS=gather(mask.kv_index_BS, 1),
        kv_segment_BS=gather(mask.kv_segment_BS, 1),
        kv_branch_BS=gather(mask.kv_branch_BS, 1),
        aligned=False,
        reordered=False,
    )
    return kernel(q_BHCK, gather(k_BGCK, 2), gather(v_BGCK, 2), every_key)


def _step_fns(block: BlockFn, axis: str) -> tuple[Callable, Callable]:
    """own(q, mask, kv) and other(s, q, mask, kv) -> (out, lse): this device's queries against its own block, and
    against the block of the device s places back in the ring.

    A device's chunks are i and 2n-1-i. The block of a device j < i holds chunk j, before both of ours, and 2n-1-j,
    after both: our queries meet its first half only. A device j > i holds chunks between ours: only our second
    chunk meets them. Either way half of the queries x keys square is computed, on every device alike."""

    def own(q_BHCK, mask: AttentionMask, kv: KV):
        k_BGCK, v_BGCK = kv[:2]  # the same tokens as the queries, in time order
        return block(q_BHCK, k_BGCK, v_BGCK, dataclasses.replace(mask, aligned=True, reordered=False))

    def other(s, q_BHCK, mask: AttentionMask, kv: KV):
        k_BGCK, v_BGCK, kv_index_BC, kv_segment_BC, kv_branch_BC = kv
        c = q_BHCK.shape[2] // 2
        first, second = (lambda x: x[:, :c]), (lambda x: x[:, c:])

        def earlier():
            sub = _between(mask, _query_side(mask), _parts(first, kv_index_BC, kv_segment_BC, kv_branch_BC))
            return block(q_BHCK, k_BGCK[:, :, :c], v_BGCK[:, :, :c], sub)

        def later():
            sub = _between(mask, _query_side(mask, second), (kv_index_BC, kv_segment_BC, kv_branch_BC))
            o_BHcK, lse_BHc = block(q_BHCK[:, :, c:], k_BGCK, v_BGCK, sub)
            return (
                jnp.concatenate([jnp.zeros_like(o_BHcK), o_BHcK], axis=2),
                jnp.concatenate([jnp.full_like(lse_BHc, _NEG), lse_BHc], axis=2),
            )

        return jax.lax.cond(s <= jax.lax.axis_index(axis), earlier, later)

    return own, other


def _query_side(mask: AttentionMask, part: Callable = lambda x: x) -> tuple:
    """(index, segment, branch) of the queries, or `part` of each."""
    return _parts(part, mask.q_index_BT, mask.q_segment_BT, mask.q_branch_BT)


def _parts(part: Callable, *arrays) -> tuple:
    return tuple(None if x is None else part(x) for x in arrays)


def _between(mask: AttentionMask, q: tuple, kv: tuple) -> AttentionMask:
    """The mask of queries `q` against keys `kv` of other tokens: window and bias as in `mask`, no order promised."""
    return AttentionMask(
        q_index_BT=q[0],
        kv_index_BS=kv[0],
        q_segment_BT=q[1],
        kv_segment_BS=kv[1],
        q_branch_BT=q[2],
        kv_branch_BS=kv[2],
        window=mask.window,
        alibi=mask.alibi,
    )


def _merge(out_a, lse_a, out_b, lse_b) -> tuple[jax.Array, jax.Array]:
    """Two softmax attentions over disjoint keys as one (f32): weighted by each one's share of the normaliser."""
    top = jnp.maximum(lse_a, lse_b)
    w_a, w_b = jnp.exp(lse_a - top), jnp.exp(lse_b - top)
    total = w_a + w_b
    out = (out_a * w_a[..., None] + out_b.astype(jnp.float32) * w_b[..., None]) / total[..., None]
    return out, top + jnp.log(total)


def _sender(axis: str, n: int) -> Callable:
    """Pass a tree of arrays one device on around the ring (device j's to j + 1), None entries left alone."""
    ring = [(j, (j + 1) % n) for j in range(n)]
    return lambda tree: jax.tree.map(lambda x: jax.lax.ppermute(x, axis, ring), tree)
