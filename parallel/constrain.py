"""Activation sharding at block boundaries: `constrain` is what the model calls, a no-op unless rules are active."""

import contextlib
import contextvars

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meshlm.parallel.rules import Rules, partition

# Read while a function is traced, so a jitted step keeps the rules that were active when it was first traced.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("meshlm_rules", default=None)


def named_sharding(mesh: Mesh, rules: Rules, shape: tuple[int, ...], names: tuple[str | None, ...]) -> NamedSharding:
    dims = partition(tuple(shape), tuple(names), dict(mesh.shape), rules)
    return NamedSharding(mesh, PartitionSpec(*(spec_entry(d) for d in dims)))


def spec_entry(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    return None if not axes else axes[0] if len(axes) == 1 else axes


@contextlib.contextmanager
def rules_active(mesh: Mesh, rules: Rules):
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """x laid out as the active rules place these logical axes; unchanged when none are active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    return jax.lax.with_sharding_constraint(x, named_sharding(*active, x.shape, names))
