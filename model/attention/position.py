"""Position schemes that live inside attention: rotary (queries and keys rotated) and ALiBi (a bias on the mask)."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.config import ModelConfig


def rotary(x_BHTK: jax.Array, positions_BT: jax.Array, theta: float) -> jax.Array:
    """Rotate feature pairs (i, i + K/2) by position-dependent angles (GPT-NeoX layout)."""
    half = x_BHTK.shape[-1] // 2
    freq_F = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_B1TF = (positions_BT[..., None].astype(jnp.float32) * freq_F)[:, None]
    sin_B1TF, cos_B1TF = jnp.sin(angle_B1TF), jnp.cos(angle_B1TF)
    x1, x2 = jnp.split(x_BHTK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos_B1TF - x2 * sin_B1TF, x2 * cos_B1TF + x1 * sin_B1TF], axis=-1)
    return out.astype(x_BHTK.dtype)


def apply_position(
    cfg: ModelConfig, q_BHTK: jax.Array, k_BGTK: jax.Array, positions_BT: jax.Array, mask: AttentionMask
) -> tuple[jax.Array, jax.Array, AttentionMask]:
    """Queries, keys and mask with the model's position scheme applied (learned positions are added before)."""
    if cfg.position == "rotary":
        return rotary(q_BHTK, positions_BT, cfg.rope_theta), rotary(k_BGTK, positions_BT, cfg.rope_theta), mask
    if cfg.position == "alibi":
        return q_BHTK, k_BGTK, mask.with_alibi()
    return q_BHTK, k_BGTK, mask
