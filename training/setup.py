"""One assembly of a training setup from a config and a mesh: graphdef, optimizer and schedule, shardings,
initial or restored sharded state, jitted train and eval steps. The trainer, `meshlm plan`'s XLA check, the
benchmarks and the sweep runner all build it here, so there is one way to set training up."""

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from meshlm.model import mup
from meshlm.model.transformer import Transformer, abstract_model
from meshlm.parallel import distributed
from meshlm.parallel.sharding import NamedSharding, Partitioner, abstract, model_axes
from meshlm.training import batch_ramp, recipe
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.config import Config
from meshlm.training.optimizer import make_optimizer
from meshlm.training.train_step import ScheduledStep, TrainState, init_state, make_eval_step, make_step_program

BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions")


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    cfg: Config
    partitioner: Partitioner
    graphdef: nnx.GraphDef
    ramp: batch_ramp.BatchRamp  # each step's batch: how the loader feeds it and the step accumulates it
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    param_axes: dict  # each parameter's logical axis names
    state_sharding: TrainState  # a NamedSharding in place of every array
    batch_sharding: NamedSharding
    train_step: Callable  # (state, batch) -> (state, metrics), state donated, traced under the mesh's rules
    train_steps: Callable  # the same over batches stacked on a leading axis: one call, a step per batch
    eval_step: Callable  # (params, batch) -> (summed loss, token count)

    @property
    def plan(self) -> recipe.StepPlan:
        """The run's length in steps and, under a batch ramp, each step's batch."""
        return self.ramp.plan

    def _init(self) -> TrainState:
        return _initial_state(self.cfg, self.optimizer)

    def state_with_params(self, params: dict) -> TrainState:
        """The initial state around given parameters (a pure dict, e.g. converted weights): the optimizer state
        this setup's optimizer creates for them, as a fresh run's would be."""
        dtype = jnp.dtype(self.cfg.model.param_dtype)
        model = nnx.merge(self.graphdef, jax.tree.map(lambda x: jnp.asarray(x, dtype), params))
        return init_state(model, self.optimizer, self.cfg.train.seed)

    def init_state(self) -> TrainState:
        """The initial state created directly in its shards: never whole on one device."""
        return self.partitioner.init(self._init, self.param_axes)[0]

    def restore_or_init(self, checkpointer: Checkpointer, log: Callable[[str], None] = print):
        """(state, data-iterator state) of the latest intact checkpoint, resharded onto this mesh; a damaged one is
        reported through `log` and moved aside, and the one before it used. (new state, None) if there is none."""
        abstract_state = self.abstract_state()
        restored = checkpointer.restore_latest_intact(
            lambda step: checkpointer.restore(abstract_state, step), log=log, move_aside=True
        )
        return (self.init_state(), None) if restored is None else restored

    def abstract_state(self) -> TrainState:
        return abstract(jax.eval_shape(self._init), self.state_sharding)

    def abstract_batch(self, keys: tuple[str, ...] = BATCH_KEYS) -> dict[str, jax.ShapeDtypeStruct]:
        shape = (self.cfg.train.batch_size, self.cfg.seq_len)
        return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self.batch_sharding) for k in keys}

    def lower(self, state=None, batch=None, fresh: bool = False, stacked: bool = False):
        """The train step lowered for `state` and `batch` (default: abstract ones, nothing allocated); `fresh` traces
        a new jit, so nothing cached is reused (compile-time benchmarks); `stacked`: train_steps, for stacked
        batches."""
        if fresh:
            step = _jit_train_step(
                self.cfg,
                self.partitioner,
                self.graphdef,
                self.optimizer,
                self.schedule,
                self.ramp,
                self.state_sharding,
                stacked,
            )
        else:
            # Through any wrappers (a test's) to the step that has a lower().
            step = inspect.unwrap(self.train_steps if stacked else self.train_step, stop=lambda f: hasattr(f, "lower"))
        with self.partitioner.activate():
            return step.lower(self.abstract_state() if state is None else state, batch or self.abstract_batch())

    def memory_analysis(self) -> dict[str, int]:
        """XLA's memory analysis (bytes per device) of the real train step, compiled from abstract shapes."""
        stats = self.lower().compile().memory_analysis()
        out = dict(
            arguments=stats.argument_size_in_bytes,
            outputs=stats.output_size_in_bytes,
            aliased=stats.alias_size_in_bytes,
            temp=stats.temp_size_in_bytes,
        )
        out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temp"]
        return out


def build(cfg: Config, partitioner: Partitioner | None = None) -> TrainSetup:
    """The setup of `cfg` on `partitioner`'s mesh (default: the mesh that cfg.mesh describes on all devices)."""
    t = cfg.train
    partitioner = partitioner or Partitioner.build(cfg.mesh)
    model = abstract_model(cfg.model, t.seed)
    graphdef = nnx.graphdef(model)
    ramp = batch_ramp.of(t, cfg.seq_len)
    schedule = recipe.learning_rate_schedule(t, cfg.seq_len)
    optimizer = make_optimizer(t.optimizer, ramp.plan.total_steps, schedule, mup.lr_scales(model))
    param_axes = model_axes(cfg.model)
    state_sharding = partitioner.state_shardings(jax.eval_shape(lambda: _initial_state(cfg, optimizer)), param_axes)
    step_of = functools.partial(_jit_train_step, cfg, partitioner, graphdef, optimizer, schedule, ramp, state_sharding)
    return TrainSetup(
        cfg=cfg,
        partitioner=partitioner,
        graphdef=graphdef,
        ramp=ramp,
        optimizer=optimizer,
        schedule=schedule,
        param_axes=param_axes,
        state_sharding=state_sharding,
        batch_sharding=partitioner.batch_sharding(t.batch_size, cfg.seq_len),
        train_step=step_of(stacked=False),
        train_steps=step_of(stacked=True),
        eval_step=partitioner.under_rules(distributed.compiled_in_step(make_eval_step(graphdef))),
    )


def _initial_state(cfg: Config, optimizer: optax.GradientTransformation) -> TrainState:
    return init_state(Transformer(cfg.model, nnx.Rngs(cfg.train.seed)), optimizer, cfg.train.seed)


def _jit_train_step(
    cfg: Config,
    partitioner: Partitioner,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    ramp: batch_ramp.BatchRamp,
    state_sharding: TrainState,
    stacked: bool,
) -> Callable:
    batch_sharding = partitioner.stacked_batch_sharding if stacked else partitioner.batch_sharding
    program = make_step_program(
        graphdef,
        optimizer,
        ramp.accumulation,  # a ramp's chunks are accumulated micro-batches
        dropout=cfg.model.dropout > 0,
        state_sharding=state_sharding,
        batch_sharding=batch_sharding(cfg.train.batch_size, cfg.seq_len),
        micro_batches_at=ramp.micro_batches_at,
        compiler_options=partitioner.compiler_options(),
        stacked=stacked,
    )
    return ScheduledStep(partitioner.under_rules(distributed.compiled_in_step(program)), schedule, stacked)
