"""AdamW with the GPT-3 schedule (or warmup-stable-decay), global-norm clipping and a weight-decay mask."""

import jax
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
    decay = max(1, int(cfg.decay_fraction * total_steps))
    stable = max(0, total_steps - warmup - decay)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, warmup),
            optax.constant_schedule(peak),
            optax.linear_schedule(peak, floor, decay),
        ],
        [warmup, warmup + stable],
    )


def decay_mask(params) -> dict:
    """Weight decay on weight matrices and embeddings; never on biases (`b_*`, `bias`) or norm scales."""

    def decays(path, _) -> bool:
        name = str(getattr(path[-1], "key", path[-1]))
        return not (name.startswith("b_") or name in ("bias", "scale"))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int, schedule: optax.Schedule | None = None
) -> optax.GradientTransformation:
    """AdamW on `schedule` (e.g. recipe.learning_rate_schedule's token clock), or on the step schedule of cfg."""
    schedule = schedule or learning_rate_schedule(cfg, total_steps)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
