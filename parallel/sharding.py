"""A mesh plus rule tables: shardings for parameters, optimizer state, batches; sharded initialisation."""

import dataclasses
from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from meshlm.model.config import ModelConfig
from meshlm.model.transformer import Transformer, logical_axes
from meshlm.parallel.config import AXES, MeshConfig
from meshlm.parallel.constrain import named_sharding, rules_active
from meshlm.parallel.rules import Rules, rules_for

BATCH_AXES = ("act_batch", None)  # [B, T] token arrays: rows split like activations, each row whole


def make_mesh(sizes: dict[str, int], devices=None) -> Mesh:
    # Auto axes: XLA propagates shardings from parameters, batches and the block-boundary constraints.
    return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def model_axes(cfg: ModelConfig) -> dict:
    """Each parameter's tuple of logical axis names, as a nested dict like the parameters (nothing allocated)."""
    return nnx.to_pure_dict(logical_axes(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))))


@dataclasses.dataclass(frozen=True)
class Partitioner:
    mesh: Mesh
    rules: Rules

    @classmethod
    def build(cls, cfg: MeshConfig, devices=None) -> "Partitioner":
        devices = jax.devices() if devices is None else devices
        return cls(make_mesh(cfg.axis_sizes(len(devices)), devices), rules_for(cfg))

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.mesh.shape)

    def sharding(self, shape: tuple[int, ...], names: tuple[str | None, ...]) -> NamedSharding:
        return named_sharding(self.mesh, self.rules, shape, names)

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def activate(self):
        """Context in which the model's `constrain` calls place activations by these rules (at trace time)."""
        return rules_active(self.mesh, self.rules)

    def param_shardings(self, params, axes: dict) -> dict:
        # `axes` has tuples where params has arrays: tree.map hands each array its whole tuple.
        return jax.tree.map(lambda x, names: self.sharding(x.shape, names), params, axes)

    def state_shardings(self, state, axes: dict):
        """Parameters and every parameter-shaped tree in the state (AdamW's mu and nu) by the rules; the rest
        (step, counts, rng) replicated."""
        params = self.param_shardings(state.params, axes)
        params_def = jax.tree.structure(state.params)
        is_params = lambda x: jax.tree.structure(x) == params_def  # noqa: E731
        return jax.tree.map(lambda x: params if is_params(x) else self.replicated(), state, is_leaf=is_params)

    def init(self, init_fn: Callable, axes: dict):
        """(init_fn() with each array created in its own shards, the state's shardings): nothing is ever whole
        on one device, so a state larger than one device's memory can be created."""
        shardings = self.state_shardings(jax.eval_shape(init_fn), axes)
        with self.activate():
            return jax.jit(init_fn, out_shardings=shardings)(), shardings

    def batch_sharding(self, rows: int, seq_len: int) -> NamedSharding:
        return self.sharding((rows, seq_len), BATCH_AXES)

    def global_batch(self, local: dict[str, np.ndarray], rows: int) -> dict[str, jax.Array]:
        """This process's rows of a batch of `rows` rows, as global arrays sharded by batch_sharding."""

        def place(x: np.ndarray) -> jax.Array:
            shape = (rows,) + x.shape[1:]
            return jax.make_array_from_process_local_data(self.sharding(shape, BATCH_AXES + (None,) * (x.ndim - 2)), x, shape)

        return {k: place(v) for k, v in local.items()}


def abstract(tree, shardings):
    """ShapeDtypeStructs that carry their target shardings: what AOT lowering and orbax restores read."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
