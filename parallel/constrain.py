"""Activation sharding at block boundaries: the layout that the model's `constrain` calls follow under a mesh."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meshlm.model.layout import layout_active
from meshlm.parallel.context import ContextParallel
from meshlm.parallel.rules import Rules, partition


def named_sharding(mesh: Mesh, rules: Rules, shape: tuple[int, ...], names: tuple[str | None, ...]) -> NamedSharding:
    dims = partition(tuple(shape), tuple(names), dict(mesh.shape), rules)
    return NamedSharding(mesh, PartitionSpec(*(spec_entry(d) for d in dims)))


def spec_entry(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    return None if not axes else axes[0] if len(axes) == 1 else axes


class MeshLayout(ContextParallel):
    """Activations placed on `mesh` by `rules`; sequences and attention spread over its context axis, if any."""

    def __init__(self, mesh: Mesh, rules: Rules, context_impl: str):
        super().__init__(mesh, context_impl)
        self.rules = rules

    def place(self, x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, named_sharding(self.mesh, self.rules, x.shape, names))


def rules_active(mesh: Mesh, rules: Rules, context_impl: str = "ring"):
    """Context in which model/layout.py's `constrain(x, names)` places x on `mesh` by `rules`, and context
    parallelism (a context axis of size > 1) holds sequences in its order and attends across devices."""
    return layout_active(MeshLayout(mesh, rules, context_impl))
