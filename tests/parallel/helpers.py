"""A tiny model, synthetic batches and a few train steps, on one device or on a mesh."""

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from meshlm.model.config import ModelConfig
from meshlm.model.transformer import Transformer
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner, model_axes
from meshlm.parallel.slices import slice_index
from meshlm.training.config import OptimizerConfig, TrainConfig
from meshlm.training.optimizer import learning_rate_schedule, make_optimizer
from meshlm.training.train_step import init_state, make_train_step

MODEL = ModelConfig(vocab_size=128, n_ctx=16, n_layers=2, d_model=64, n_heads=4)
# eps well above f32 gradient noise: Adam divides by |g| + eps, and the k bias has an exactly zero gradient,
# so with a tiny eps its update would be the sign of rounding noise (which differs with the reduction order).
TRAIN = TrainConfig(
    steps=5, batch_size=8, optimizer=OptimizerConfig(peak_lr=3e-3, schedule="constant", warmup_steps=0, eps=1e-6)
)


def init_fn(cfg: ModelConfig = MODEL, train: TrainConfig = TRAIN):
    optimizer = make_optimizer(train.optimizer, train.steps)
    return lambda: init_state(Transformer(cfg, nnx.Rngs(train.seed)), optimizer, train.seed)


@functools.cache
def initial_state():
    """The unsharded initial state on the host (compiled once per test session)."""
    return jax.tree.map(np.asarray, jax.jit(init_fn())())


def batches(
    n: int, cfg: ModelConfig = MODEL, rows: int = TRAIN.batch_size, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Random tokens, each row two packed documents split at a random point."""
    rng = np.random.default_rng(seed)
    T = cfg.n_ctx
    out = []
    for _ in range(n):
        tokens = rng.integers(0, cfg.vocab_size, (rows, T + 1), dtype=np.int32)
        cut_B1 = rng.integers(1, T, (rows, 1))
        t_1T = np.arange(T)[None]
        segment_ids = np.where(t_1T < cut_B1, 1, 2).astype(np.int32)
        positions = np.where(t_1T < cut_B1, t_1T, t_1T - cut_B1).astype(np.int32)
        out.append(dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], segment_ids=segment_ids, positions=positions))
    return out


def run(
    mesh: MeshConfig | None,
    steps: int,
    slice_of: Callable = slice_index,
    model: ModelConfig = MODEL,
    train: TrainConfig = TRAIN,
):
    """(loss of each step, host params after each step, final state) from initial_state(); `slice_of` places the
    devices in slices for a mesh with a dcn_ axis. `model` and `train` may change what does not change the
    initial state (remat, compute dtype, micro-batches)."""
    optimizer = make_optimizer(train.optimizer, train.steps)
    schedule = learning_rate_schedule(train.optimizer, train.steps)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model, nnx.Rngs(0))))
    data = batches(steps)
    if mesh is None:
        state = jax.device_put(initial_state())
        step = make_train_step(graphdef, optimizer, schedule, train, dropout=False)
        return _steps(step, state, data)
    partitioner = Partitioner.build(mesh, slice_of=slice_of)
    shardings = partitioner.state_shardings(initial_state(), model_axes(model))
    state = jax.device_put(initial_state(), shardings)
    step = make_train_step(
        graphdef,
        optimizer,
        schedule,
        train,
        dropout=False,
        state_sharding=shardings,
        batch_sharding=partitioner.batch_sharding(train.batch_size, model.n_ctx),
    )
    with partitioner.activate():
        return _steps(step, state, [partitioner.global_batch(b, train.batch_size) for b in data])


def _steps(step, state, data):
    losses, params = [], []
    for batch in data:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        params.append(jax.tree.map(np.asarray, state.params))  # copied now: the next step donates the state
    return losses, params, state
