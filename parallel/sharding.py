"""A mesh plus rule tables: shardings for parameters, optimizer state, batches; sharded initialisation."""

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import abstract_model, logical_axes
from meshlm.parallel.config import AXES, ContextImpl, MeshConfig
from meshlm.parallel.constrain import named_sharding, rules_active, spec_entry
from meshlm.parallel.rules import Rules, partition, rules_for
from meshlm.parallel.slices import device_grid, slice_index

# [B, T] token arrays: rows split like activations; the sequence only by context parallelism (sequence parallelism
# starts at the first block).
BATCH_AXES = ("act_batch", "batch_seq")
# XLA:CPU's default scheduler orders the step for concurrency between its thunks; the memory-optimised one took the
# cpu-small train step 3-4 % faster and its temporary buffer from 377 to 284 MB per device (docs/performance.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


# Auto axes: XLA propagates shardings from parameters, batches and the block-boundary constraints.
AUTO = (AxisType.Auto,) * len(AXES)


def make_mesh(sizes: dict[str, int], devices=None) -> Mesh:
    return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES, axis_types=AUTO, devices=devices)


def model_axes(cfg: ModelConfig) -> dict:
    """Each parameter's tuple of logical axis names, as a nested dict like the parameters (nothing allocated)."""
    return nnx.to_pure_dict(logical_axes(abstract_model(cfg)))


def flat_params(cfg: ModelConfig) -> dict[str, tuple[jax.ShapeDtypeStruct, tuple[str, ...]]]:
    """{"blocks/attn/w_qkv": (shape and dtype, logical axes)} for every parameter, nothing allocated."""
    model = abstract_model(cfg)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    pairs = jax.tree.map(lambda x, names: (x, names), params, model_axes(cfg))
    leaves = jax.tree_util.tree_flatten_with_path(
        pairs, is_leaf=lambda x: isinstance(x, tuple) and isinstance(x[0], jax.ShapeDtypeStruct)
    )[0]
    return {"/".join(str(k.key) for k in path): pair for path, pair in leaves}


def param_specs(model: ModelConfig, mesh: MeshConfig, n_devices: int) -> dict[str, PartitionSpec]:
    """Each parameter's PartitionSpec on a mesh of n_devices, from shapes alone (no devices needed)."""
    sizes, rules = mesh.axis_sizes(n_devices), rules_for(mesh)
    return {
        path: PartitionSpec(*map(spec_entry, partition(x.shape, names, sizes, rules)))
        for path, (x, names) in flat_params(model).items()
    }


@dataclasses.dataclass(frozen=True)
class Partitioner:
    mesh: Mesh
    rules: Rules
    context_impl: ContextImpl = "ring"

    @classmethod
    def build(cls, cfg: MeshConfig, devices=None, slice_of: Callable = slice_index) -> "Partitioner":
        """The mesh of `cfg` on `devices` (all of them by default); `slice_of(device)` places each device in a slice
        when the mesh has a dcn_ axis (tests pass a made-up assignment for CPU devices)."""
        devices = jax.devices() if devices is None else devices
        sizes = cfg.axis_sizes(len(devices))
        if math.prod(cfg.dcn_sizes.values()) > 1:
            mesh = Mesh(device_grid(cfg, sizes, devices, slice_of), AXES, axis_types=AUTO)
            return cls(mesh, rules_for(cfg), cfg.context_impl)
        if jax.process_count() > 1 and math.prod(sizes.values()) != len(devices):
            raise ConfigError(
                f"mesh {cfg.shape!r} leaves devices out, but every one of the {jax.process_count()} processes needs a "
                "part; use -1 for one axis"
            )
        return cls(make_mesh(sizes, devices[: math.prod(sizes.values())]), rules_for(cfg), cfg.context_impl)

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.mesh.shape)

    def sharding(self, shape: tuple[int, ...], names: tuple[str | None, ...]) -> NamedSharding:
        return named_sharding(self.mesh, self.rules, shape, names)

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def compiler_options(self) -> dict[str, str]:
        """XLA options for the steps compiled onto this mesh's devices."""
        return dict(CPU_COMPILER_OPTIONS) if self.mesh.devices.flat[0].platform == "cpu" else {}

    def activate(self):
        """Context in which the model's `constrain` calls place activations by these rules (at trace time)."""
        return rules_active(self.mesh, self.rules, self.context_impl)

    def under_rules(self, fn: Callable) -> Callable:
        """fn (a jitted step) called with the rules active, so its first call traces the model's constraints."""

        @functools.wraps(fn)
        def call(*args, **kwargs):
            with self.activate():
                return fn(*args, **kwargs)

        return call

    def param_shardings(self, params, axes: dict) -> dict:
        # `axes` has tuples where params has arrays: tree.map hands each array its whole tuple.
        return jax.tree.map(lambda x, names: self.sharding(x.shape, names), params, axes)

    def place_params(self, params, axes: dict):
        """Host or single-device parameters placed on the mesh by the rules."""
        return jax.device_put(params, self.param_shardings(params, axes))

    def place_replicated(self, x: np.ndarray) -> jax.Array:
        """A host array whole on every device of the mesh."""
        return jax.device_put(x, self.replicated())

    def place_rows(self, *arrays_B: np.ndarray) -> list[jax.Array]:
        """Whole [B, ...] host arrays (the same on every process) placed on the mesh, rows split over the batch axes."""
        return [jax.device_put(x, self.sharding(x.shape, BATCH_AXES[:1] + (None,) * (x.ndim - 1))) for x in arrays_B]

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

    def stacked_batch_sharding(self, rows: int, seq_len: int) -> NamedSharding:
        """Several steps' batches stacked on a leading axis (of any length), each placed as batch_sharding does."""
        return self.sharding((1, rows, seq_len), (None,) + BATCH_AXES)

    def global_batch(self, local: dict[str, np.ndarray], rows: int, stacked: bool = False) -> dict[str, jax.Array]:
        """This process's rows of a batch of `rows` rows, as global arrays sharded by batch_sharding; `stacked`:
        several steps' batches on a leading axis (stacked_batch_sharding)."""
        lead = (None,) if stacked else ()

        def place(x: np.ndarray) -> jax.Array:
            shape = x.shape[: len(lead)] + (rows,) + x.shape[len(lead) + 1 :]
            names = lead + BATCH_AXES + (None,) * (x.ndim - len(lead) - 2)
            return jax.make_array_from_process_local_data(self.sharding(shape, names), x, shape)

        return {k: place(v) for k, v in local.items()}


def abstract(tree, shardings):
    """ShapeDtypeStructs that carry their target shardings: what AOT lowering and orbax restores read."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
