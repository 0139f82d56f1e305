"""The decode cache: heads-major arrays of every layer, written in place with dynamic_update_slice.

Each array is [layers, batch, heads, slots, features...]: a new token's keys land in one slot of each head with
one dynamic_update_slice, and attention reads a layer's [batch, heads, slots, features] without a transpose.
Decoding gives each layer arrays of its own instead (a tuple per name, `per_layer`), read by unrolled layers: XLA
copies a layer out of a stacked array before a dot can read it, and at batch 16 those copies are a third of a
decode step.
What the arrays hold is the attention layer's choice (keys and values, a shared latent, ...); a ring-buffer layer
(sliding window) has as many slots as its window and overwrites the oldest.
"""

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from meshlm.model.attention import registry
from meshlm.model.attention.mask import AttentionMask

if TYPE_CHECKING:  # model/config.py imports this package, so the config type is only named here
    from meshlm.model.config import ModelConfig

SLOT_AXIS = 2  # of a layer's array [batch, heads, slots, features...]; 3 in the stacked arrays


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """The layers' arrays, and what all layers share: each slot's time index and segment (0 = empty), and the
    number of tokens written so far (the time index of the next one)."""

    layers: dict[str, jax.Array | tuple[jax.Array, ...]]
    time_S: jax.Array
    segment_BS: jax.Array
    index: jax.Array
    ring: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def empty(cls, cfg: "ModelConfig", batch: int, length: int, per_layer: bool = False) -> "KVCache":
        """Room for `length` tokens (fewer slots for a ring buffer), in the compute dtype; per_layer: arrays of
        their own for each layer (read in place by unrolled layers) instead of stacked ones."""
        layer_cls = registry.layer(cfg.attention_layer)
        S = layer_cls.cache_slots(cfg, length)
        shapes = layer_cls.cache_shapes(cfg).items()
        if not per_layer:
            layers = {name: jnp.zeros((cfg.n_layers, batch, heads, S, *f), cfg.dtype) for name, (heads, *f) in shapes}
        else:
            layers = {
                name: tuple(jnp.zeros((batch, heads, S, *f), cfg.dtype) for _ in range(cfg.n_layers))
                for name, (heads, *f) in shapes
            }
        zeros_S = jnp.zeros((S,), jnp.int32)
        return cls(layers, zeros_S, jnp.zeros((batch, S), jnp.int32), jnp.zeros((), jnp.int32), layer_cls.ring)

    @property
    def per_layer(self) -> bool:
        return isinstance(next(iter(self.layers.values())), tuple)

    @property
    def slots(self) -> int:
        return self.time_S.shape[0]

    def bytes_per_token(self) -> int:
        """Cache bytes one token occupies, all layers together."""
        batch = self.segment_BS.shape[0]
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.layers)) // (batch * self.slots)

    def _appends(self, T: int) -> bool:
        """Whether the T new tokens are attended to next to the old slots instead of after writing them: a ring
        buffer cannot take a prompt longer than one token before its queries have seen the slots it overwrites."""
        return self.ring and T > 1

    def mask(self, q_segment_BT: jax.Array) -> AttentionMask:
        """What queries of the T new tokens may see: the slots as they will be read by `LayerCache.update`."""
        B, T = q_segment_BT.shape
        q_index_BT = jnp.broadcast_to(self.index + jnp.arange(T, dtype=jnp.int32), (B, T))
        if self._appends(T):
            kv_index_BS = jnp.concatenate([jnp.broadcast_to(self.time_S, (B, self.slots)), q_index_BT], axis=1)
            kv_segment_BS = jnp.concatenate([self.segment_BS, q_segment_BT], axis=1)
        else:
            kv_index_BS = jnp.broadcast_to(self._written(self.time_S[None], q_index_BT[:1])[0], (B, self.slots))
            kv_segment_BS = self._written(self.segment_BS, q_segment_BT)
        return AttentionMask(q_index_BT, kv_index_BS, q_segment_BT, kv_segment_BS)

    def advanced(self, q_segment_BT: jax.Array, layers: dict[str, jax.Array]) -> "KVCache":
        B, T = q_segment_BT.shape
        q_index_1T = (self.index + jnp.arange(T, dtype=jnp.int32))[None]
        time_S = self._written(self.time_S[None], q_index_1T)[0]
        return KVCache(layers, time_S, self._written(self.segment_BS, q_segment_BT), self.index + T, self.ring)

    def _written(self, old_BS: jax.Array, new_BT: jax.Array) -> jax.Array:
        return write(old_BS, new_BT, start=self.index, axis=1, ring=self.ring)

    def for_layer(self, layers: dict, layer: jax.Array | int) -> "LayerCache":
        return LayerCache(layers, layer, self.index, self.ring)


def write(old: jax.Array, new: jax.Array, *, start: jax.Array, axis: int, ring: bool) -> jax.Array:
    """old with `new` written along `axis` from slot `start`; a ring buffer wraps around and keeps only the newest
    tokens that fit. A single token (every decode step) is one dynamic_update_slice."""
    S, T = old.shape[axis], new.shape[axis]
    new = new.astype(old.dtype)
    if not ring or T == 1:
        return jax.lax.dynamic_update_slice_in_dim(old, new, start % S if ring else start, axis)
    # A prompt into a ring: lay the newest min(T, S) tokens out in slot order with one roll (static shapes).
    keep = min(T, S)
    kept = jax.lax.slice_in_dim(new, T - keep, T, axis=axis)
    padded = jnp.pad(kept, [(0, S - keep if a == axis else 0) for a in range(old.ndim)])
    shift = (start + T - keep) % S
    written_S = jnp.roll(jnp.arange(S) < keep, shift)
    return jnp.where(written_S.reshape((S,) + (1,) * (old.ndim - axis - 1)), jnp.roll(padded, shift, axis), old)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerCache:
    """One layer's view of the cache inside the scan over layers: the stacked arrays are carried whole, so a write
    touches only the new slots of this layer. Per-layer arrays (unrolled layers) come with a Python int `layer`."""

    layers: dict[str, jax.Array | tuple[jax.Array, ...]]
    layer: jax.Array | int
    index: jax.Array
    ring: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def update(self, new: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], "LayerCache"]:
        """(what this layer's queries read: each array [batch, heads, slots, ...], the cache with `new` written).
        `new` holds [batch, heads, T, ...] per array."""
        T = next(iter(new.values())).shape[SLOT_AXIS]
        if self.ring and T > 1:
            old = {name: self._of_layer(self.layers[name]) for name in new}
            visible = {
                name: jnp.concatenate([old[name], x.astype(old[name].dtype)], SLOT_AXIS) for name, x in new.items()
            }
            written = {
                name: write(old[name], x, start=self.index, axis=SLOT_AXIS, ring=True) for name, x in new.items()
            }
            layers = {name: self._into_layer(self.layers[name], x, start=0) for name, x in written.items()}
            return visible, dataclasses.replace(self, layers=layers)
        x_L = self.layers[next(iter(new))]
        slots = (x_L[0].shape if isinstance(x_L, tuple) else x_L.shape[1:])[SLOT_AXIS]
        start = self.index % slots if self.ring else self.index
        layers = {name: self._into_layer(self.layers[name], x, start=start) for name, x in new.items()}
        return {name: self._of_layer(x) for name, x in layers.items()}, dataclasses.replace(self, layers=layers)

    def _of_layer(self, x_L: jax.Array | tuple[jax.Array, ...]) -> jax.Array:
        if isinstance(x_L, tuple):
            return x_L[self.layer]
        return jax.lax.dynamic_index_in_dim(x_L, self.layer, axis=0, keepdims=False)

    def _into_layer(self, x_L: jax.Array | tuple[jax.Array, ...], x: jax.Array, start):
        """x written into this layer of x_L from `start` along the slot axis: the only copy is of x."""
        if isinstance(x_L, tuple):
            starts = (0, 0, start) + (0,) * (x.ndim - 3)
            written = jax.lax.dynamic_update_slice(x_L[self.layer], x.astype(x_L[0].dtype), starts)
            return x_L[: self.layer] + (written,) + x_L[self.layer + 1 :]
        starts = (self.layer, 0, 0, start) + (0,) * (x_L.ndim - 4)
        return jax.lax.dynamic_update_slice(x_L, x[None].astype(x_L.dtype), starts)
