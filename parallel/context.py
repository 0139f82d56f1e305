"""Context parallelism: the `context` mesh axis splits every sequence over its n devices for the whole step.

Between blocks the rules split the residual stream along the sequence (act_seq -> context), so norms, MLPs, the
embeddings and the loss each see 1/n of the tokens. For causal attention to cost every device the same, the model
holds each sequence in zig-zag order (Llama 3, section 3.3.2): cut into 2n chunks, device i holds chunks i and
2n-1-i. The model moves its inputs into that order once on entry and its final hidden states back before the head
(model/transformer.py); positions, segment ids and the mask's indices travel with the tokens. Attention then runs
inside a shard_map over the context axis, the other axes left to XLA: by ring or all-gather (parallel/ring.py).
Decoding (a KV cache) is left in time order and attends as it does without a mesh."""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from meshlm.model import attention
from meshlm.model.attention import AttentionMask, KernelFn
from meshlm.model.errors import ConfigError
from meshlm.model.layout import Layout
from meshlm.parallel import ring

AXIS = "context"


class ContextParallel(Layout):
    """The context axis of `mesh` (size 1: nothing to do) and how attention crosses it ("ring" or "all_gather")."""

    def __init__(self, mesh: Mesh, impl: str):
        self.mesh, self.impl, self.n = mesh, impl, dict(mesh.shape).get(AXIS, 1)

    def reorders(self, T: int) -> bool:
        """Sequences are spread only where they cut into 2n equal chunks (meshlm's checks require it of training)."""
        return self.n > 1 and T % (2 * self.n) == 0

    def to_context_order(self, x_BX: jax.Array) -> jax.Array:
        return self._shard_map(functools.partial(_to_zigzag, self.n), x_BX.ndim)(x_BX)

    def to_time_order(self, x_BX: jax.Array) -> jax.Array:
        return self._shard_map(functools.partial(_from_zigzag, self.n), x_BX.ndim)(x_BX)

    def attend(self, kernel: KernelFn, q_BHTK, k_BGSK, v_BGSK, mask: AttentionMask) -> jax.Array:
        if not mask.reordered:
            return kernel(q_BHTK, k_BGSK, v_BGSK, mask)
        if self.impl == "all_gather":
            body = functools.partial(ring.all_gather_attend, kernel, AXIS)
        else:
            body = functools.partial(ring.ring_attend, ring_block(kernel), AXIS, self.n)
        heads = PartitionSpec(None, None, AXIS, None)
        mask_specs = jax.tree.map(lambda x: PartitionSpec(None, AXIS) if x.ndim == 2 else PartitionSpec(), mask)
        across = jax.shard_map(
            body,
            mesh=self.mesh,
            in_specs=(heads, heads, heads, mask_specs),
            out_specs=heads,
            axis_names={AXIS},
            check_vma=False,  # the ring's branches mix per-device and constant values
        )
        return across(q_BHTK, k_BGSK, v_BGSK, mask)

    def _shard_map(self, body, ndim: int):
        spec = PartitionSpec(None, AXIS, *(None,) * (ndim - 2))
        return jax.shard_map(body, mesh=self.mesh, in_specs=spec, out_specs=spec, axis_names={AXIS}, check_vma=False)


def ring_block(kernel: KernelFn):
    """The kernel's form with log-sum-exps, which ring attention needs; a ConfigError naming the fix without one."""
    block = attention.block(kernel)
    if block is None:
        raise ConfigError(ring_refusal(attention.kernel_name(kernel)))
    return block


def ring_refusal(name: str) -> str:
    serving = [k for k in attention.kernel_names() if attention.block(attention.kernel(k)) is not None]
    return (
        f"model.attention={name} cannot serve as ring attention's inner block (it returns no log-sum-exp to merge "
        f"blocks by); set mesh.context_impl=all_gather, or model.attention to one of {', '.join(serving)}"
    )


def _owner(chunk: int, n: int) -> int:
    """The device that holds chunk `chunk` of 2n in zig-zag order."""
    return chunk if chunk < n else 2 * n - 1 - chunk


def _to_zigzag(n: int, x_BX: jax.Array) -> jax.Array:
    """Device d holds chunks 2d and 2d+1 (time order) and ends with chunks d and 2n-1-d. Each device holds one even
    and one odd chunk either way, so two ppermutes move them all; d's own chunk (d) comes first."""
    even, odd = jnp.split(x_BX, 2, axis=1)
    even = jax.lax.ppermute(even, AXIS, [(d, _owner(2 * d, n)) for d in range(n)])
    odd = jax.lax.ppermute(odd, AXIS, [(d, _owner(2 * d + 1, n)) for d in range(n)])
    d_is_even = jax.lax.axis_index(AXIS) % 2 == 0
    return jnp.where(d_is_even, jnp.concatenate([even, odd], axis=1), jnp.concatenate([odd, even], axis=1))


def _from_zigzag(n: int, x_BX: jax.Array) -> jax.Array:
    """The inverse of _to_zigzag."""
    d = jax.lax.axis_index(AXIS)
    mine, mirrored = jnp.split(x_BX, 2, axis=1)  # chunks d and 2n-1-d
    even, odd = jnp.where(d % 2 == 0, mine, mirrored), jnp.where(d % 2 == 0, mirrored, mine)
    even = jax.lax.ppermute(even, AXIS, [(_owner(2 * j, n), j) for j in range(n)])
    odd = jax.lax.ppermute(odd, AXIS, [(_owner(2 * j + 1, n), j) for j in range(n)])
    return jnp.concatenate([even, odd], axis=1)
