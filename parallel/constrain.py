"""Activation sharding at block boundaries: the layout that the model's `constrain` calls follow under a mesh."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meshlm.model.layout import layout_active
from meshlm.parallel.rules import Rules, partition


def named_sharding(mesh: Mesh, rules: Rules, shape: tuple[int, ...], names: tuple[str | None, ...]) -> NamedSharding:
    dims = partition(tuple(shape), tuple(names), dict(mesh.shape), rules)
    return NamedSharding(mesh, PartitionSpec(*(spec_entry(d) for d in dims)))


def spec_entry(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    return None if not axes else axes[0] if len(axes) == 1 else axes


def rules_active(mesh: Mesh, rules: Rules):
    """Context in which model/layout.py's `constrain(x, names)` places x on `mesh` by `rules`."""

    def place(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, named_sharding(mesh, rules, x.shape, names))

    return layout_active(place)
