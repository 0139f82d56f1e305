"""Memory per device, read from the shards the arrays really have on 8 simulated devices."""

import collections

import jax
import numpy as np

from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import CPU_COMPILER_OPTIONS, Partitioner, model_axes
from meshlm.training import setup as setup_lib
from meshlm.training.config import Config, TrainConfig
from tests.parallel.helpers import MODEL, init_fn, initial_state


def _bytes_per_device(tree) -> dict:
    per_device = collections.Counter()
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            per_device[shard.device] += shard.data.nbytes
    return per_device


def test_fsdp_splits_params_and_optimizer_state_eightfold():
    partitioner = Partitioner.build(MeshConfig("fsdp=8"))
    state, _ = partitioner.init(init_fn(), model_axes(MODEL))
    total = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    per_device = _bytes_per_device((state.params, state.opt_state))
    assert len(per_device) == 8
    assert max(per_device.values()) <= total / 8 * 1.01, (max(per_device.values()), total / 8)
    # Created in shards under jit, yet the same values as the unsharded initialisation.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        jax.tree.map(np.asarray, state),
        initial_state(),
    )


def test_tensor_parallel_halves_every_matmul_weight():
    partitioner = Partitioner.build(MeshConfig("data=4,tensor=2"))
    shardings = partitioner.state_shardings(initial_state(), model_axes(MODEL))
    params = jax.device_put(initial_state().params, shardings.params)
    matmuls = {
        "embed": params["embed"],  # also the output head (tied)
        "w_qkv": params["blocks"]["attn"]["w_qkv"],
        "w_out": params["blocks"]["attn"]["w_out"],
        "w_in": params["blocks"]["mlp"]["w_in"],
        "mlp_w_out": params["blocks"]["mlp"]["w_out"],
    }
    for name, x in matmuls.items():
        for shard in x.addressable_shards:
            assert shard.data.size * 2 == x.size, (name, shard.data.shape, x.shape)


def test_cpu_train_step_compiles_with_the_memory_optimised_scheduler():
    """The setup's step carries Partitioner.compiler_options: its temporary buffer is the memory-optimised
    schedule's, smaller than XLA:CPU's default schedule of the same program."""
    mesh = MeshConfig("data=2")
    partitioner = Partitioner.build(mesh, jax.devices()[:2])
    assert partitioner.compiler_options() == CPU_COMPILER_OPTIONS
    cfg = Config(model=MODEL, train=TrainConfig(batch_size=8, seq_len=64), mesh=mesh)
    lowered = setup_lib.build(cfg, partitioner).lower()
    temp = lambda compiled: compiled.memory_analysis().temp_size_in_bytes  # noqa: E731
    default = temp(lowered.compile(compiler_options={"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_DEFAULT"}))
    assert temp(lowered.compile()) == temp(lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)) < default
