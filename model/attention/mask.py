"""Which keys each query may see (causal by time index, within its own segment, optionally within a window), and
ALiBi's per-head distance bias, which also lives here because it is a function of the same indices."""

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
    `plain_causal` promises there is nothing but the causal rule (no segments, window or bias), which lets fused
    kernels skip the mask tensor; `aligned` that queries and keys are the same tokens in order (training, scoring),
    so that kernels taking segment ids can serve packed rows.
    """

    q_index_BT: jax.Array
    kv_index_BS: jax.Array
    q_segment_BT: jax.Array
    kv_segment_BS: jax.Array
    window: jax.Array | None = None
    plain_causal: bool = dataclasses.field(default=False, metadata=dict(static=True))
    alibi: bool = dataclasses.field(default=False, metadata=dict(static=True))
    aligned: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def causal(cls, batch: int, length: int, segment_ids_BT: jax.Array | None = None) -> "AttentionMask":
        index_BT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        plain = segment_ids_BT is None
        segment_BT = jnp.ones((batch, length), jnp.int32) if plain else segment_ids_BT.astype(jnp.int32)
        return cls(index_BT, index_BT, segment_BT, segment_BT, plain_causal=plain, aligned=True)

    @property
    def segments_only(self) -> bool:
        """Aligned queries and keys with the causal rule and segment ids, nothing else (no window, no bias)."""
        return self.aligned and self.window is None and not self.alibi

    def with_window(self, window: int | jax.Array) -> "AttentionMask":
        return dataclasses.replace(self, window=jnp.asarray(window, jnp.int32), plain_causal=False)

    def with_alibi(self) -> "AttentionMask":
        return dataclasses.replace(self, alibi=True, plain_causal=False)

    def dense_BTS(self) -> jax.Array:
        distance_BTS = self.q_index_BT[:, :, None] - self.kv_index_BS[:, None, :]
        visible_BTS = (distance_BTS >= 0) & (self.kv_segment_BS[:, None, :] == self.q_segment_BT[:, :, None])
        if self.window is not None:
            visible_BTS &= (self.window <= 0) | (distance_BTS < self.window)
        return visible_BTS

    def bias_BHTS(self, n_heads: int) -> jax.Array | None:
        """The additive f32 logit bias, or None when there is none."""
        return alibi_bias_BHTS(self.q_index_BT, self.kv_index_BS, n_heads) if self.alibi else None
