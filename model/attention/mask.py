"""Which keys each query may see (causal by time index, within its own segment and branch, optionally within a
window), and ALiBi's per-head distance bias, which also lives here because it is a function of the same indices."""

import dataclasses

import jax
import jax.numpy as jnp

from meshlm.model.attention.alibi import alibi_bias_BHTS


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Time indices order tokens (a cache slot carries the index of the token it holds); segment ids separate
    packed documents.

    Segment 0 marks padding and empty cache slots: real tokens never see it, and a padding query sees only
    earlier padding, so no row of the mask is empty. `window` (a scalar, possibly traced: a scanned stack of layers
    can give each layer its own) hides keys `window` or more steps older than the query; 0 = no limit.
    Branch ids (optional) let several continuations share one context in a row: within a segment, keys of branch 0
    are seen by every query, keys of branch b > 0 only by queries of branch b. Time indices are then the tokens'
    positions, so each branch continues the shared context's positions.

    `plain_causal` promises there is nothing but the causal rule (no segments, branches, window or bias), which lets
    fused kernels skip the mask tensor; `aligned` that queries and keys are the same tokens in order (training,
    scoring) and that no token sees a later one, so kernels can skip the blocks above the diagonal, and kernels
    taking segment ids can serve packed rows. `reordered`: the tokens of an aligned mask held out of time order
    (context parallelism's load-balanced order, `in_order`); the indices still say the true order.
    """

    q_index_BT: jax.Array
    kv_index_BS: jax.Array
    q_segment_BT: jax.Array
    kv_segment_BS: jax.Array
    q_branch_BT: jax.Array | None = None
    kv_branch_BS: jax.Array | None = None
    window: jax.Array | None = None
    plain_causal: bool = dataclasses.field(default=False, metadata=dict(static=True))
    alibi: bool = dataclasses.field(default=False, metadata=dict(static=True))
    aligned: bool = dataclasses.field(default=False, metadata=dict(static=True))
    reordered: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def causal(cls, batch: int, length: int, segment_ids_BT: jax.Array | None = None) -> "AttentionMask":
        index_BT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        plain = segment_ids_BT is None
        segment_BT = jnp.ones((batch, length), jnp.int32) if plain else segment_ids_BT.astype(jnp.int32)
        return cls(index_BT, index_BT, segment_BT, segment_BT, plain_causal=plain, aligned=True)

    @classmethod
    def shared_prefix(cls, positions_BT: jax.Array, segment_ids_BT: jax.Array, branch_ids_BT: jax.Array):
        """Packed rows in which continuations (branches 1, 2, ...) follow their shared context (branch 0), each
        branch's positions continuing the context's, every branch after its context in the row."""
        index_BT, segment_BT, branch_BT = (x.astype(jnp.int32) for x in (positions_BT, segment_ids_BT, branch_ids_BT))
        return cls(index_BT, index_BT, segment_BT, segment_BT, branch_BT, branch_BT, aligned=True)

    def in_order(self, move) -> "AttentionMask":
        """This aligned mask for its tokens moved into another order by `move` ([B, T] -> [B, T]). Kernels then see
        neither `aligned` nor `plain_causal`: both promise that array order is time order."""
        q_branch_BT = None if self.q_branch_BT is None else move(self.q_branch_BT)
        index_BT, segment_BT = move(self.q_index_BT), move(self.q_segment_BT)
        return dataclasses.replace(
            self,
            q_index_BT=index_BT,
            kv_index_BS=index_BT,
            q_segment_BT=segment_BT,
            kv_segment_BS=segment_BT,
            q_branch_BT=q_branch_BT,
            kv_branch_BS=q_branch_BT,
            plain_causal=False,
            aligned=False,
            reordered=True,
        )

    @property
    def segments_only(self) -> bool:
        """Aligned queries and keys with the causal rule and segment ids, nothing else (no branches, window, bias)."""
        return self.aligned and self.q_branch_BT is None and self.window is None and not self.alibi

    def with_window(self, window: int | jax.Array) -> "AttentionMask":
        return dataclasses.replace(self, window=jnp.asarray(window, jnp.int32), plain_causal=False)

    def with_alibi(self) -> "AttentionMask":
        return dataclasses.replace(self, alibi=True, plain_causal=False)

    def dense_BTS(self) -> jax.Array:
        distance_BTS = self.q_index_BT[:, :, None] - self.kv_index_BS[:, None, :]
        visible_BTS = (distance_BTS >= 0) & (self.kv_segment_BS[:, None, :] == self.q_segment_BT[:, :, None])
        if self.q_branch_BT is not None:
            kv_branch_1BS = self.kv_branch_BS[:, None, :]
            visible_BTS &= (kv_branch_1BS == 0) | (kv_branch_1BS == self.q_branch_BT[:, :, None])
        if self.window is not None:
            visible_BTS &= (self.window <= 0) | (distance_BTS < self.window)
        return visible_BTS

    def bias_BHTS(self, n_heads: int) -> jax.Array | None:
        """The additive f32 logit bias, or None when there is none."""
        return alibi_bias_BHTS(self.q_index_BT, self.kv_index_BS, n_heads) if self.alibi else None
