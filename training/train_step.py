"""The train state and the jitted functions that advance it: by one step, or by several in one call."""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from meshlm.model.transformer import Transformer
from meshlm.training.train_config import TrainConfig

Batch = dict[str, jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Plain arrays only (parameters as a nested dict), so orbax can save and reshard every field."""

    step: jax.Array
    params: dict
    opt_state: Any
    rng: jax.Array  # raw uint32 key data: checkpointable, unlike a typed key


def leaf_name(path) -> str:
    """A tree path as "params/blocks/attn/w_qkv", whatever containers (dataclass, dict, list) it passes."""
    return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def init_state(model: Transformer, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return TrainState(
        jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.key_data(jax.random.key(seed + 1))
    )


def token_losses(graphdef, params, batch: Batch, dropout_key=None, z_loss: float = 0.0):
    """Per-token cross-entropy (f32, whatever the compute dtype) and its weights (0 on padding)."""
    model = nnx.merge(graphdef, params)
    logits_BTV, _ = model(batch["inputs"], batch.get("positions"), batch.get("segment_ids"), dropout_key=dropout_key)
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
    if z_loss:
        ce_BT = ce_BT + z_loss * jnp.square(jax.nn.logsumexp(logits_BTV, axis=-1))
    weight_BT = (batch["segment_ids"] > 0).astype(jnp.float32) if "segment_ids" in batch else jnp.ones_like(ce_BT)
    return ce_BT, weight_BT


def make_gradient_fn(graphdef, cfg: TrainConfig) -> Callable:
    """(params, batch, key, n_micro=None) -> (mean gradient over the batch's tokens, summed loss, token count).

    The batch is split into `cfg.micro_batches` sequential pieces; their summed gradients are divided by the
    token count of the whole batch, so accumulation changes memory, not the result."""
    z_loss, M = cfg.optimizer.z_loss, cfg.micro_batches

    def summed_loss(params, micro: Batch, key):
        ce_BT, weight_BT = token_losses(graphdef, params, micro, key, z_loss)
        return jnp.sum(ce_BT * weight_BT), jnp.sum(weight_BT)

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)

    def gradients(params, batch: Batch, key, n_micro=None):
        # Micro-batch m takes rows m, m + M, ...: every device's rows feed every micro-batch, so a batch split
        # over data-parallel devices needs no resharding (contiguous pieces would each live on 1/M of them).
        micro_MB = jax.tree.map(lambda x: x.reshape((x.shape[0] // M, M) + x.shape[1:]).swapaxes(0, 1), batch)

        def add_micro(carry, xs):
            grads, loss_sum, tokens = carry
            micro, i = xs
            micro_key = None if key is None else jax.random.fold_in(key, i)
            (loss_i, tokens_i), grads_i = grad_fn(params, micro, micro_key)
            return (jax.tree.map(jnp.add, grads, grads_i), loss_sum + loss_i, tokens + tokens_i), None

        init = (jax.tree.map(jnp.zeros_like, params), 0.0, 0.0)
        if n_micro is None:
            (grads, loss_sum, tokens), _ = jax.lax.scan(add_micro, init, (micro_MB, jnp.arange(M)))
        else:
            # A batch ramp: only the first n_micro pieces hold data this step, and the loop runs just those.
            body = lambda i, carry: add_micro(carry, (jax.tree.map(lambda x: x[i], micro_MB), i))[0]
            grads, loss_sum, tokens = jax.lax.fori_loop(0, n_micro, body, init)
        return jax.tree.map(lambda g: g / jnp.maximum(tokens, 1.0), grads), loss_sum, tokens

    return gradients


def make_train_step(
    graphdef, optimizer: optax.GradientTransformationExtraArgs, schedule: optax.Schedule, cfg: TrainConfig, **options
) -> "ScheduledStep":
    """(state, batch) -> (state, metrics), the state donated: make_step_program's program (`options` are its
    keywords) driven by `schedule`."""
    program = make_step_program(graphdef, optimizer, cfg, **options)
    return ScheduledStep(program, schedule, options.get("stacked", False))


def make_step_program(
    graphdef,
    optimizer: optax.GradientTransformationExtraArgs,
    cfg: TrainConfig,
    dropout: bool,
    state_sharding=None,
    batch_sharding=None,
    micro_batches_at: Callable[[jax.Array], jax.Array] | None = None,
    compiler_options: dict[str, str] | None = None,
    stacked: bool = False,
) -> Callable:
    """(state, batch, lr) -> (state, metrics), jitted, the state donated; `optimizer` from make_optimizer, which
    applies the `lr` it is given. Shardings (from meshlm.parallel) place the state and batch on a mesh; None leaves
    placement to JAX. Under a batch ramp, `micro_batches_at(step)` says how many of the batch's micro-batches hold
    data at that step (training/batch_ramp.py). `compiler_options` go to XLA (Partitioner.compiler_options).
    `stacked`: batches and rates come stacked on a leading axis and one call runs a step per batch (a scan), its
    metrics stacked likewise (train.steps_per_call)."""
    accumulate = make_gradient_fn(graphdef, cfg)

    def step(state: TrainState, batch: Batch, lr: jax.Array):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step) if dropout else None
        n_micro = None if micro_batches_at is None else micro_batches_at(state.step)
        grads, loss_sum, tokens = accumulate(state.params, batch, key, n_micro)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, learning_rate=lr)
        params = optax.apply_updates(state.params, updates)
        loss = loss_sum / jnp.maximum(tokens, 1.0)
        # A non-finite loss or gradient is never applied: parameters and optimizer moments stay as they were and
        # the trainer stops with a diagnosis or counts the skipped batch (train.nonfinite).
        grad_finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
        finite = jnp.isfinite(loss) & jnp.all(grad_finite)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), (params, opt_state), (state.params, state.opt_state)
        )
        metrics = dict(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            lr=lr,
            tokens=tokens,
            finite=finite,
            grad_finite=grad_finite,  # one flag per parameter, in jax.tree.leaves order, for the diagnosis
        )
        return TrainState(state.step + 1, params, opt_state, state.rng), metrics

    def steps(state: TrainState, batches: Batch, lrs: jax.Array):
        return jax.lax.scan(lambda s, xs: step(s, *xs), state, (batches, lrs))

    fn = steps if stacked else step
    if state_sharding is None:
        return jax.jit(fn, donate_argnums=0, compiler_options=compiler_options)
    return jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_sharding, batch_sharding, state_sharding.step),  # the rates replicated, as the step is
        out_shardings=(state_sharding, None),
        compiler_options=compiler_options,
    )


class ScheduledStep:
    """(state, batch) -> program(state, batch, lr), the rate of each step from `schedule` by a small program of its
    own: the step's program holds no schedule constants, so every run of one shape shares it (and its entry in
    JAX's persistent compilation cache) whatever its peak LR, length or cooldown. Dispatched without waiting on
    the device: the rate is computed from state.step where it lies."""

    def __init__(self, program: Callable, schedule: optax.Schedule, stacked: bool):
        self.program, self.stacked = program, stacked
        rate = lambda step: jnp.asarray(schedule(step), jnp.float32)
        # A stacked call's n rates in the same one dispatch: steps step .. step + n - 1.
        rates = lambda step, n: jax.vmap(rate)(step + jnp.arange(n, dtype=step.dtype))
        self._rates = jax.jit(rates, static_argnums=1) if stacked else jax.jit(rate)

    def __call__(self, state: TrainState, batch: Batch):
        rates = self._rates(state.step, _leading(batch)) if self.stacked else self._rates(state.step)
        return self.program(state, batch, rates)

    def lower(self, state: TrainState, batch: Batch):
        """The step's program lowered for (state, batch), its rates abstract: what one call compiles. The rates are
        placed as a call places them (as the state's step), so a call and this lowering share JAX's trace."""
        shape = (_leading(batch),) if self.stacked else ()
        rates = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=getattr(state.step, "sharding", None))
        jitted = inspect.unwrap(self.program, stop=lambda f: hasattr(f, "lower"))
        return jitted.lower(state, batch, rates)


def _leading(batch: Batch) -> int:
    """A stacked batch's leading size: the steps one call runs."""
    return jax.tree.leaves(batch)[0].shape[0]


def make_eval_step(graphdef) -> Callable:
    """(params, batch) -> (summed loss, token count), so batches of any padding average correctly."""

    def evaluate(params, batch: Batch):
        ce_BT, weight_BT = token_losses(graphdef, params, batch)
        return jnp.sum(ce_BT * weight_BT), jnp.sum(weight_BT)

    return jax.jit(evaluate)
