import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meshlm.training.config import OptimizerConfig
from meshlm.training.optimizer import decay_mask, learning_rate_schedule


def test_gpt3_cosine_warms_up_linearly_then_decays_to_ten_percent():
    cfg = OptimizerConfig(peak_lr=1e-3, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg, 110)
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-4)
    assert float(lr(10)) == pytest.approx(1e-3)
    assert float(lr(60)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-5)  # half way down the cosine
    assert float(lr(110)) == pytest.approx(1e-4)


def test_warmup_stable_decay_holds_the_peak_then_decays_linearly():
    cfg = OptimizerConfig(peak_lr=1e-3, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    lr = learning_rate_schedule(cfg, 100)
    assert float(lr(10)) == pytest.approx(1e-3) and float(lr(79)) == pytest.approx(1e-3)
    assert float(lr(90)) == pytest.approx(5e-4) and float(lr(100)) == pytest.approx(0.0, abs=1e-12)


def test_wsd_decays_as_one_minus_sqrt_when_asked():
    """Hägele et al.'s shape: peak x (1 - sqrt(t / decay)) down to the floor, here 0, over the last 20 steps."""
    cfg = OptimizerConfig(
        peak_lr=1e-3, warmup_steps=10, schedule="wsd", decay_fraction=0.2, decay_shape="1-sqrt", min_lr_ratio=0.0
    )
    lr = learning_rate_schedule(cfg, 100)
    assert float(lr(80)) == pytest.approx(1e-3) and float(lr(85)) == pytest.approx(5e-4)  # sqrt(5/20) = 1/2
    assert float(lr(95)) == pytest.approx(1e-3 * (1 - 0.75**0.5)) and float(lr(100)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_before_its_decay_is_the_constant_schedule_bit_for_bit(shape, users_compiler):
    """A cooldown branch resumes a trunk trained on `constant`: every LR before the decay must be the same float."""
    cfg = OptimizerConfig(peak_lr=3e-3, warmup_steps=7, schedule="wsd", decay_fraction=0.2, decay_shape=shape)
    steps = jnp.arange(80)
    compiled = lambda schedule: jax.jit(jax.vmap(schedule), compiler_options=users_compiler)  # noqa: E731
    wsd = compiled(learning_rate_schedule(cfg, 100))(steps)
    constant = compiled(learning_rate_schedule(dataclasses.replace(cfg, schedule="constant"), 80))(steps)
    assert np.array_equal(np.asarray(wsd), np.asarray(constant))
    lr = learning_rate_schedule(cfg, 100)
    assert float(lr(80)) == pytest.approx(3e-3) and float(lr(81)) < 3e-3  # the decay starts at step 80


def test_weight_decay_skips_biases_and_norm_scales():
    params = {
        "embed": jnp.zeros((4, 2)),
        "blocks": {
            "mlp": {"w_in": jnp.zeros((2, 2, 3)), "b_in": jnp.zeros((2, 3))},
            "attn": {"b_qkv": jnp.zeros((2, 3, 2, 2))},
            "attn_norm": {"scale": jnp.zeros((2, 2)), "bias": jnp.zeros((2, 2))},
        },
    }
    mask = decay_mask(params)
    assert mask["embed"] and mask["blocks"]["mlp"]["w_in"]
    assert not any(
        [
            mask["blocks"]["mlp"]["b_in"],
            mask["blocks"]["attn"]["b_qkv"],
            mask["blocks"]["attn_norm"]["scale"],
            mask["blocks"]["attn_norm"]["bias"],
        ]
    )
