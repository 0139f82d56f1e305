"""muP's per-parameter Adam learning rates (model/mup.py's multipliers in training/optimizer.py), wired through the
one training setup; the saved config carries the parametrization; `standard` stays the default and trains as
before."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from meshlm.model import mup
from meshlm.model.transformer import abstract_model
from meshlm.training import config as config_lib
from meshlm.training import setup as setup_lib
from meshlm.training.optimizer import make_optimizer
from meshlm.training.train_config import OptimizerConfig

LR = 1e-2
HIDDEN = ("attn/w_qkv", "attn/w_out", "mlp/w_in", "mlp/w_out")


def _cfg(parametrization: str, width: int) -> config_lib.Config:
    """Constant LR from the first step, no clipping and no decay: Adam's first step then moves every weight with a
    gradient by lr x g / (|g| + eps), i.e. by its LR."""
    return config_lib.from_preset(
        "tiny",
        [
            "model.vocab_size=97",
            "data.vocab_size=97",
            "model.n_ctx=16",
            "model.n_layers=2",
            f"model.d_model={width}",
            "model.n_heads=4",
            "model.tie_embeddings=false",
            f"model.parametrization={parametrization}",
            "model.mup_base_width=32",
            "train.steps=10",
            "train.batch_size=4",
            "train.seq_len=16",
            f"train.optimizer.peak_lr={LR}",
            "train.optimizer.schedule=constant",
            "train.optimizer.warmup_steps=0",
            "train.optimizer.weight_decay=0",
            "train.optimizer.grad_clip=0",
        ],
    ).validate()


@functools.cache
def _one_step(parametrization: str, width: int) -> tuple[dict, dict]:
    """The parameters before and after one step of the setup's train step on random tokens."""
    setup = setup_lib.build(_cfg(parametrization, width))
    state = setup.init_state()
    before = jax.tree.map(np.array, state.params)  # copied: the step donates the state
    tokens = np.random.default_rng(0).integers(0, 97, (2, 4, 16), dtype=np.int32)
    state, _ = setup.train_step(state, {"inputs": tokens[0], "targets": tokens[1]})
    return before, jax.tree.map(np.array, state.params)


def _moved(parametrization: str, width: int) -> dict:
    before, after = _one_step(parametrization, width)
    return jax.tree.map(lambda a, b: np.abs(a - b), after, before)


@pytest.mark.slow
def test_at_twice_the_base_width_a_hidden_matrix_moves_half_as_far_on_the_first_adam_step():
    base, wide = _moved("mup", 32), _moved("mup", 64)
    for name in HIDDEN:
        layer, weight = name.split("/")
        assert np.max(base["blocks"][layer][weight]) == pytest.approx(LR, rel=1e-4), name
        assert np.max(wide["blocks"][layer][weight]) == pytest.approx(LR / 2, rel=1e-4), name
        assert np.median(wide["blocks"][layer][weight]) == pytest.approx(LR / 2, rel=1e-2), name
    for moved in (base, wide):  # embeddings, the unembedding and norms keep the base LR
        for table in (moved["embed"], moved["pos_embed"], moved["unembed"], moved["final_norm"]["scale"]):
            assert np.max(table) == pytest.approx(LR, rel=1e-4)


@pytest.mark.slow
def test_at_its_base_width_mup_trains_as_standard_bit_for_bit():
    same = lambda a, b: jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b))
    assert all(same(s, m) for s, m in zip(_one_step("standard", 32), _one_step("mup", 32)))


def test_weight_decay_per_step_does_not_shrink_with_the_width():
    model = abstract_model(_cfg("mup", 128).model)  # m = 4
    params = jax.tree.map(lambda x: jnp.full(x.shape, 2.0), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    opt = make_optimizer(
        OptimizerConfig(peak_lr=LR, schedule="constant", warmup_steps=0, weight_decay=0.1),
        10,
        lr_scales=mup.lr_scales(model),
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(opt.update)(zeros, opt.init(params), params)
    # No gradient: the step is the decay alone, lr x weight_decay x w, on hidden matrices as on the embeddings.
    np.testing.assert_allclose(updates["blocks"]["mlp"]["w_in"], -LR * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(updates["embed"], -LR * 0.1 * 2.0, rtol=1e-6)


def test_multipliers_of_one_are_optax_adamw_exactly():
    cfg = OptimizerConfig(peak_lr=LR, warmup_steps=2, weight_decay=0.1, grad_clip=0.5)
    params = {"w_in": jnp.ones((4, 4)), "b_in": jnp.zeros(4)}
    ones = jax.tree.map(lambda _: 1.0, params)
    plain, scaled = make_optimizer(cfg, 10), make_optimizer(cfg, 10, lr_scales=ones)
    plain_state, scaled_state = plain.init(params), scaled.init(params)
    plain_update, scaled_update = jax.jit(plain.update), jax.jit(scaled.update)
    for i in range(3):
        grads = jax.tree.map(lambda x, i=i: jax.random.normal(jax.random.key(i), x.shape), params)
        a, plain_state = plain_update(grads, plain_state, params)
        b, scaled_state = scaled_update(grads, scaled_state, params)
        assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))
        params = optax.apply_updates(params, a)


def test_standard_is_the_default_and_mup_round_trips_through_the_saved_config(tmp_path):
    assert config_lib.from_preset("tiny") == config_lib.from_preset("tiny", ["model.parametrization=standard"])
    cfg = config_lib.from_preset("tiny", ["model.parametrization=mup", "model.mup_base_width=64"]).validate()
    config_lib.save(cfg, tmp_path / "config.json")
    assert config_lib.load(tmp_path / "config.json") == cfg
    # A config saved before the fields existed loads as the standard parametrization.
    old = json.loads((tmp_path / "config.json").read_text())
    del old["model"]["parametrization"], old["model"]["mup_base_width"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert config_lib.load(tmp_path / "old.json").model.parametrization == "standard"
