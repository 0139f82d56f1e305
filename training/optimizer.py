"""AdamW with the GPT-3 schedule (or warmup-stable-decay), global-norm clipping and a weight-decay mask."""

import jax
import jax.numpy as jnp
import optax

from meshlm.training.train_config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    peak, floor = cfg.peak_lr, cfg.peak_lr * cfg.min_lr_ratio
    warmup = min(cfg.warmup_steps, total_steps)
    if cfg.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    if cfg.schedule == "cosine":
        # Linear warmup, then cosine from the peak down to min_lr_ratio x peak at the last step (GPT-3).
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end_value=floor)
    decay = decay_steps(cfg, total_steps)
    stable = max(0, total_steps - warmup - decay)
    # The warm-up and the flat part are the constant schedule's own pieces: a sweep's cooldown branch resumes a
    # trunk trained on `constant` and must see the same learning rates, bit for bit.
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, warmup),
            optax.constant_schedule(peak),
            _DECAYS[cfg.decay_shape](peak, floor, decay),
        ],
        [warmup, warmup + stable],
    )


def decay_steps(cfg: OptimizerConfig, total_steps: int) -> int:
    """wsd: how many of the run's last steps decay (at least one)."""
    return max(1, int(cfg.decay_fraction * total_steps))


def _one_minus_sqrt(peak: float, floor: float, steps: int) -> optax.Schedule:
    """peak - (peak - floor) x sqrt(t / steps): the cooldown shape that did best in Hägele et al. (2024)."""
    return lambda count: peak - (peak - floor) * jnp.sqrt(jnp.clip(count, 0, steps) / steps)


_DECAYS = {"linear": optax.linear_schedule, "1-sqrt": _one_minus_sqrt}


def scale_by_learning_rate(schedule: optax.Schedule) -> optax.GradientTransformationExtraArgs:
    """optax.scale_by_learning_rate(schedule), except that update(..., learning_rate=lr) applies the rate it is
    given. The train step passes it from outside its compiled program: runs that differ only in their schedule (a
    sweep's LR grid, its cooldown branches) then compile one program and share the persistent compilation cache.
    The state is the schedule's step count either way, so checkpoints keep their layout."""
    scale = optax.scale_by_learning_rate(schedule)

    def update(updates, state, params=None, *, learning_rate=None, **extra_args):
        if learning_rate is None:
            return scale.update(updates, state, params)
        updates = jax.tree.map(lambda u: jnp.asarray(-learning_rate, u.dtype) * u, updates)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(scale.init, update)


def decay_mask(params) -> dict:
    """Weight decay on weight matrices and embeddings; never on biases (`b_*`, `bias`) or norm scales."""

    def decays(path, _) -> bool:
        name = str(getattr(path[-1], "key", path[-1]))
        return not (name.startswith("b_") or name in ("bias", "scale"))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int, schedule: optax.Schedule | None = None, lr_scales: dict | None = None
) -> optax.GradientTransformation:
    """AdamW on `schedule` (e.g. recipe.learning_rate_schedule's token clock), or on the step schedule of cfg.
    `lr_scales` (a multiplier per parameter, as muP gives: model/mup.py) scales each parameter's learning rate."""
    schedule = schedule or learning_rate_schedule(cfg, total_steps)
    # optax.adamw's chain, written out so that its last link takes the step's rate as an argument. Under muP the
    # multipliers act on Adam's direction alone: the decay per step stays lr x weight_decay at every width, as
    # microsoft/mup's MuAdamW keeps it (muP's LR / m would weaken it).
    multipliers = () if lr_scales is None else (optax.stateless(lambda u, _: jax.tree.map(jnp.multiply, u, lr_scales)),)
    adamw = optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        *multipliers,
        optax.add_decayed_weights(cfg.weight_decay, decay_mask),
        scale_by_learning_rate(schedule),
    )
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
