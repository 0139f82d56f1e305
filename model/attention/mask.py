"""Which keys each query may see: causal by slot index, and only within its own segment."""

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Slot indices order tokens in time (cache slots when decoding); segment ids separate packed documents.

    Segment 0 marks padding and empty cache slots: real tokens never see it, and a padding query sees only
    earlier padding, so no row of the mask is empty. `plain_causal` promises there is nothing but the causal
    rule (training without segment ids), which lets fused kernels skip the mask tensor.
    """

    q_index_BT: jax.Array
    kv_index_BS: jax.Array
    q_segment_BT: jax.Array
    kv_segment_BS: jax.Array
    plain_causal: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def causal(cls, batch: int, length: int, segment_ids_BT: jax.Array | None = None) -> "AttentionMask":
        index_BT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        plain = segment_ids_BT is None
        segment_BT = jnp.ones((batch, length), jnp.int32) if plain else segment_ids_BT.astype(jnp.int32)
        return cls(index_BT, index_BT, segment_BT, segment_BT, plain)

    def dense_BTS(self) -> jax.Array:
        causal_BTS = self.kv_index_BS[:, None, :] <= self.q_index_BT[:, :, None]
        same_segment_BTS = self.kv_segment_BS[:, None, :] == self.q_segment_BT[:, :, None]
        return causal_BTS & same_segment_BTS
