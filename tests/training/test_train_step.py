import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training import setup as setup_lib
from meshlm.training.config import OptimizerConfig, TrainConfig
from meshlm.training.optimizer import learning_rate_schedule, make_optimizer
from meshlm.training.train_step import init_state, make_gradient_fn, make_train_step, token_losses
from tests.model.helpers import TINY


def _batch(B=8, T=16, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    segment_BT = jnp.where(jnp.arange(T) < T - 3, 1, 0) * jnp.ones((B, 1), jnp.int32)
    segment_BT = segment_BT.at[::2, 5:].set(jnp.where(segment_BT[::2, 5:] > 0, 2, 0))  # two documents, uneven padding
    positions_BT = jnp.where(segment_BT == 2, jnp.arange(T) - 5, jnp.arange(T)) * (segment_BT > 0)
    return dict(
        inputs=jax.random.randint(k1, (B, T), 0, TINY.vocab_size),
        targets=jax.random.randint(k2, (B, T), 0, TINY.vocab_size),
        segment_ids=segment_BT.astype(jnp.int32),
        positions=positions_BT.astype(jnp.int32),
    )


def _gradients(micro_batches: int):
    cfg = TrainConfig(batch_size=8, micro_batches=micro_batches, optimizer=OptimizerConfig(z_loss=1e-4))
    graphdef, params = nnx.split(Transformer(TINY, nnx.Rngs(0)))
    return jax.jit(make_gradient_fn(graphdef, cfg))(params, _batch(), None)


def _adamw_steps(micro_batches: int, steps: int = 2):
    cfg = TrainConfig(
        steps=10, batch_size=8, micro_batches=micro_batches, optimizer=OptimizerConfig(warmup_steps=1, z_loss=1e-4)
    )
    model = Transformer(TINY, nnx.Rngs(0))
    optimizer = make_optimizer(cfg.optimizer, cfg.steps)
    step = make_train_step(
        nnx.graphdef(model), optimizer, learning_rate_schedule(cfg.optimizer, cfg.steps), cfg, dropout=False
    )
    state = init_state(model, optimizer, 0)
    for i in range(steps):
        state, metrics = step(state, _batch(seed=i))
    return state.params, metrics


def _assert_close(a_tree, b_tree, rtol):
    """Elementwise, relative to each array's scale: entries near zero carry only rounding noise."""
    for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


def test_k_micro_batches_give_the_gradient_of_one_batch_k_times_larger():
    (g1, loss1, tokens1), (g4, loss4, tokens4) = _gradients(1), _gradients(4)
    assert float(tokens1) == float(tokens4) == float(jnp.sum(_batch()["segment_ids"] > 0))
    np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
    _assert_close(g4, g1, rtol=1e-6)


def test_k_micro_batches_give_the_adamw_trajectory_of_one_batch_k_times_larger():
    (params1, m1), (params4, m4) = _adamw_steps(1), _adamw_steps(4)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    # Relative to the largest parameter: Adam divides by sqrt(v), which turns the rounding noise of gradients
    # that are zero in exact arithmetic (the key bias: softmax ignores shifts) into visible, harmless steps.
    scale = max(float(np.max(np.abs(p))) for p in jax.tree.leaves(params1))
    for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params1)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale)


def test_padding_changes_nothing_the_unpadded_batch_would_not_give():
    """The batch's last 3 columns are padding in every row: its loss, token count and gradients must equal those of
    the same batch cropped to its real columns, whatever tokens the padding holds."""
    cfg = TrainConfig(batch_size=8)
    graphdef, params = nnx.split(Transformer(TINY, nnx.Rngs(0)))
    gradients = jax.jit(make_gradient_fn(graphdef, cfg))
    padded = _batch()
    real_T = 16 - 3
    assert not np.any(padded["segment_ids"][:, real_T:]) and np.all(padded["segment_ids"][:, :real_T])
    cropped = {k: v[:, :real_T] for k, v in padded.items()}
    noise = jax.random.randint(jax.random.key(7), (8, 3), 0, TINY.vocab_size)
    scrambled = {**padded, "inputs": padded["inputs"].at[:, real_T:].set(noise)}
    scrambled["targets"] = scrambled["targets"].at[:, real_T:].set(noise[::-1])
    g_crop, loss_crop, tokens_crop = gradients(params, cropped, None)
    assert float(tokens_crop) == 8 * real_T
    for batch in (padded, scrambled):
        g, loss, tokens = gradients(params, batch, None)
        assert float(tokens) == float(tokens_crop)
        np.testing.assert_allclose(loss, loss_crop, rtol=1e-6)
        _assert_close(g, g_crop, rtol=1e-5)


def test_the_loss_is_f32_with_bf16_compute():
    model = Transformer(dataclasses.replace(TINY, dtype="bfloat16"), nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    ce_BT, _ = jax.jit(lambda p, b: token_losses(graphdef, p, b))(params, _batch())
    assert ce_BT.dtype == jnp.float32


def test_train_step_lowers_the_loss_on_a_repeated_batch():
    cfg = TrainConfig(steps=20, batch_size=8, optimizer=OptimizerConfig(warmup_steps=1, peak_lr=3e-3))
    model = Transformer(TINY, nnx.Rngs(0))
    optimizer = make_optimizer(cfg.optimizer, cfg.steps)
    state = init_state(model, optimizer, 0)
    step = make_train_step(
        nnx.graphdef(model), optimizer, learning_rate_schedule(cfg.optimizer, cfg.steps), cfg, dropout=False
    )
    batch, losses = _batch(), []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.5 and int(state.step) == 15


def test_train_steps_equal_a_hand_written_loss_under_optax_adamw():
    """The setup's jitted step, held against a definition written out here: cross-entropy plus z-loss by hand on the
    model's logits, padding left out, gradients by jax.grad, then optax's own global-norm clipping and AdamW, with
    the weight-decay mask (matrices and embeddings, never biases or norm scales) and the warmup-cosine LR written
    out too. The clip is small enough to act on every step; b1, b2 and eps are not the defaults, so a swapped or
    dropped one shows. Step 0 has LR 0 (warmup), step 1 half the peak, 2 the peak, 3 the cosine's first step down."""
    peak, warmup, total, floor_ratio, clip, z_loss, decay = 1e-2, 2, 10, 0.1, 0.05, 1e-2, 0.5
    b1, b2, eps = 0.8, 0.9, 1e-6
    cfg = config_lib.from_preset(
        "tiny",
        [
            f"model.vocab_size={TINY.vocab_size}",
            f"data.vocab_size={TINY.vocab_size}",
            "model.n_ctx=16",
            "model.n_layers=2",
            "model.d_model=32",
            "model.n_heads=4",
            f"train.steps={total}",
            "train.batch_size=4",
            "train.seq_len=16",
            f"train.optimizer.peak_lr={peak}",
            "train.optimizer.schedule=cosine",
            f"train.optimizer.warmup_steps={warmup}",
            f"train.optimizer.min_lr_ratio={floor_ratio}",
            f"train.optimizer.grad_clip={clip}",
            f"train.optimizer.z_loss={z_loss}",
            f"train.optimizer.weight_decay={decay}",
            f"train.optimizer.b1={b1}",
            f"train.optimizer.b2={b2}",
            f"train.optimizer.eps={eps}",
        ],
    ).validate()
    setup = setup_lib.build(cfg)
    state = setup.init_state()
    params = jax.tree.map(np.array, state.params)  # copied: the step donates the state

    def hand_loss(params, batch):
        logits_BTV, _ = nnx.merge(setup.graphdef, params)(batch["inputs"], batch["positions"], batch["segment_ids"])
        top_BT1 = jnp.max(logits_BTV, axis=-1, keepdims=True)
        log_z_BT = jnp.log(jnp.sum(jnp.exp(logits_BTV - top_BT1), axis=-1)) + top_BT1[..., 0]
        target_BT = jnp.take_along_axis(logits_BTV, batch["targets"][..., None], axis=-1)[..., 0]
        per_token_BT = log_z_BT - target_BT + z_loss * log_z_BT**2
        real_BT = (batch["segment_ids"] > 0).astype(jnp.float32)
        return jnp.sum(per_token_BT * real_BT) / jnp.sum(real_BT)

    floor = floor_ratio * peak

    def hand_lr(count):
        cosine = floor + (peak - floor) * 0.5 * (1 + jnp.cos(jnp.pi * (count - warmup) / (total - warmup)))
        return jnp.where(count < warmup, peak * count / warmup, cosine)

    def decays(path, _) -> bool:
        name = path[-1].key
        assert name.startswith(("w_", "b_")) or name in ("embed", "pos_embed", "bias", "scale"), name
        return name.startswith("w_") or name in ("embed", "pos_embed")

    mask = jax.tree_util.tree_map_with_path(decays, params)
    reference = optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(hand_lr, b1=b1, b2=b2, eps=eps, weight_decay=decay, mask=mask),
    )

    @jax.jit
    def hand_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(hand_loss)(params, batch)
        grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
        updates, opt_state = reference.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grad_norm

    opt_state = jax.jit(reference.init)(params)
    lr_at = [0.0, peak / 2, peak, floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi / (total - warmup)))]
    # Two documents in each row, split unevenly, then 3 columns of padding.
    split_B1 = np.array([[5], [9], [3], [13]])
    segment_BT = (np.where(np.arange(16) < split_B1, 1, 2) * (np.arange(16) < 13)).astype(np.int32)
    positions_BT = ((np.arange(16) - np.where(segment_BT == 2, split_B1, 0)) * (segment_BT > 0)).astype(np.int32)
    rng = np.random.default_rng(0)
    for i in range(4):
        inputs_BT, targets_BT = rng.integers(0, TINY.vocab_size, (2, 4, 16), dtype=np.int32)
        batch = dict(inputs=inputs_BT, targets=targets_BT, segment_ids=segment_BT, positions=positions_BT)
        params, opt_state, loss, grad_norm = hand_step(params, opt_state, batch)
        assert float(grad_norm) > 2 * clip  # the clip acts
        state, metrics = setup.train_step(state, batch)
        np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
        np.testing.assert_allclose(float(metrics["grad_norm"]), float(grad_norm), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["lr"]), lr_at[i], rtol=1e-6)
        assert jax.tree.structure(state.params) == jax.tree.structure(params)
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(params)):
            where = f"step {i}: {jax.tree_util.keystr(path)}"
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=where)
    assert int(state.step) == 4


def test_a_ramped_step_uses_only_its_first_micro_batches():
    """Under a batch ramp the step loops over n of M micro-batches (M - n of them zero filler): its gradients equal
    those of a plain batch made of just those n micro-batches' rows."""
    batch, n, M = _batch(B=8), 2, 4
    graphdef, params = nnx.split(Transformer(TINY, nnx.Rngs(0)))
    ramped = make_gradient_fn(graphdef, TrainConfig(batch_size=8, micro_batches=M))
    # Micro-batch m is rows m, m + M, ...: keep micro-batches 0 and 1, fill 2 and 3 with garbage that must be ignored.
    rows = np.arange(8).reshape(2, M)
    kept = {k: v[np.sort(rows[:, :n].ravel())] for k, v in batch.items()}
    junk = {k: v.at[rows[:, n:].ravel()].set(7) for k, v in batch.items()}
    grads, loss, tokens = jax.jit(ramped)(params, junk, None, jnp.int32(n))
    plain = make_gradient_fn(graphdef, TrainConfig(batch_size=4, micro_batches=n))
    want_grads, want_loss, want_tokens = jax.jit(plain)(params, kept, None)
    assert float(tokens) == float(want_tokens) == float(jnp.sum(kept["segment_ids"] > 0))
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def _tiny_setup(*overrides: str):
    cfg = config_lib.from_preset(
        "tiny",
        [
            f"model.vocab_size={TINY.vocab_size}",
            f"data.vocab_size={TINY.vocab_size}",
            "model.n_ctx=16",
            "model.n_layers=1",
            "model.d_model=32",
            "model.n_heads=4",
            "train.batch_size=4",
            "train.seq_len=16",
            *overrides,
        ],
    ).validate()
    return setup_lib.build(cfg)


def test_runs_that_differ_only_in_their_schedule_compile_one_program():
    """A sweep's LR grid and its cooldown branches differ only in their schedules: their step programs (one step and
    a stacked call) must be the same text, so the persistent compilation cache serves every run after the first;
    the rates each run applies still differ as their schedules do."""
    runs = [
        _tiny_setup("train.steps=40", "train.optimizer.peak_lr=1e-3", "train.optimizer.schedule=cosine"),
        _tiny_setup("train.steps=90", "train.optimizer.peak_lr=4e-3", "train.optimizer.schedule=wsd"),
        _tiny_setup("train.steps=70", "train.optimizer.peak_lr=2e-3", "train.optimizer.schedule=constant"),
    ]
    for stacked in (False, True):
        batch = runs[0].abstract_batch()
        if stacked:
            batch = {k: jax.ShapeDtypeStruct((3, *v.shape), v.dtype) for k, v in batch.items()}
        texts = {run.lower(batch=batch, stacked=stacked).as_text() for run in runs}
        assert len(texts) == 1
    rates = []
    for run in runs:
        state = run.init_state()
        for _ in range(3):
            state, metrics = run.train_step(state, {k: np.ones((4, 16), np.int32) for k in ("inputs", "targets")})
        rates.append(float(metrics["lr"]))
    want = [float(run.schedule(2)) for run in runs]
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    assert len(set(want)) == 3
