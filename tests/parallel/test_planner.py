"""The planner's arithmetic, its agreement with XLA's memory analysis of the real step, and `meshlm plan`."""

import dataclasses
import json
import math
import time

import jax
import pytest

from meshlm.experiments.cli import main
from meshlm.model import presets
from meshlm.model.flops import count_params
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.planner import plan
from meshlm.parallel.sharding import Partitioner
from meshlm.training import setup as setup_lib
from meshlm.training.config import Config, TrainConfig


@pytest.mark.slow
@pytest.mark.parametrize(
    "mesh, remat",
    [
        (MeshConfig("data=2,fsdp=2,tensor=2"), "none"),
        (MeshConfig("data=2,tensor=4", sequence_parallel=True), "dots_saveable"),
        (MeshConfig("data=2,context=4"), "none"),
        (MeshConfig("data=2,context=4", context_impl="all_gather"), "full"),
    ],
)
def test_planner_agrees_with_xla_memory_analysis_within_15_percent(mesh, remat):
    model = dataclasses.replace(presets.get("tiny"), remat=remat)
    train = TrainConfig(batch_size=16, seq_len=256)
    estimate = plan(model, train, mesh, 8, "h100", 0.4)
    xla = setup_lib.build(Config(model=model, train=train, mesh=mesh), Partitioner.build(mesh)).memory_analysis()
    # XLA's arguments: exactly the planner's parameters and optimizer state, this device's 4 batch arrays of
    # 16 / data-parallel rows (and 256 / context tokens), and a few scalars (step, rng, optimizer counts).
    rows, tokens = 16 // (estimate.mesh["data"] * estimate.mesh["fsdp"]), 256 // estimate.mesh["context"]
    assert xla["arguments"] == pytest.approx(estimate.params + estimate.optimizer + 4 * rows * tokens * 4, abs=64)
    assert abs(estimate.total / xla["total"] - 1) < 0.15, (estimate.total, xla)


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [MeshConfig(""), MeshConfig("context=4", context_impl="all_gather")])
def test_planner_counts_blockwise_attention_as_keeping_no_logits(mesh):
    """blockwise never forms the [T, T] logits the planner counts for other kernels: at T = 2048 it reads 0.79 of
    XLA on both meshes (counting dense logits, 2.79 and 1.89)."""
    model = dataclasses.replace(presets.get("tiny"), n_ctx=2048, position="rotary", attention="blockwise")
    train = TrainConfig(batch_size=1, seq_len=2048)
    estimate = plan(model, train, mesh, 8 if mesh.shape else 1, "h100", 0.4)
    xla = setup_lib.build(Config(model=model, train=train, mesh=mesh), Partitioner.build(mesh)).memory_analysis()
    assert abs(estimate.total / xla["total"] - 1) < 0.25, (estimate.total, xla)


def test_fsdp_plan_splits_175b_state_over_1024_chips():
    model = presets.get("gpt3-175b")
    p = plan(model, TrainConfig(batch_size=1024), MeshConfig("fsdp=-1"), 1024, "tpu-v5p", 0.4)
    total_params = count_params(model).total
    assert p.chips == 1024 and p.mesh == dict(data=1, fsdp=1024, context=1, tensor=1)
    # Only b_qkv (3 x 96 x 128 per layer: no dimension 1024 divides) stays whole: 2% of the shard.
    assert total_params * 4 / 1024 <= p.params <= total_params * 4 / 1024 * 1.03
    assert p.grads == p.params
    # PaLM's count, from the paper's parameter count: 6N per token for the matmuls plus 12 x L x T x d for attention.
    palm = 6 * presets.paper_params("gpt3-175b") + 12 * 96 * 2048 * 12288
    assert p.flops_per_step / (1024 * 2048) == pytest.approx(palm, rel=0.01)
    # 1.079e12 FLOPs a token x 2^21 tokens a step over 1024 v5p chips at 459 TFLOP/s (bf16 data sheet) and MFU 0.4.
    assert p.step_time == pytest.approx(12.04, rel=0.01)


@pytest.mark.parametrize("mesh", [MeshConfig("fsdp=8"), MeshConfig("data=2,fsdp=2,tensor=2")])
def test_planned_parameter_and_optimizer_bytes_are_those_of_the_real_sharded_train_state(mesh):
    """Measured, not restated: the bytes one device holds of the real optax state (AdamW's mu and nu as the
    optimizer builds them, sharded as the trainer shards them) against the planner's figure."""
    model, train = presets.get("tiny"), TrainConfig(batch_size=16, seq_len=128)
    estimate = plan(model, train, mesh, 8, "h100", 0.4)
    state = setup_lib.build(Config(model=model, train=train, mesh=mesh), Partitioner.build(mesh)).abstract_state()

    def device_bytes(tree) -> int:
        leaves = jax.tree.leaves(tree)
        return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)

    assert device_bytes(state.params) == estimate.params
    scalars = sum(x.dtype.itemsize for x in jax.tree.leaves(state.opt_state) if x.ndim == 0)  # Adam's step counts
    assert device_bytes(state.opt_state) - scalars == estimate.optimizer


def test_context_parallelism_divides_activations_and_counts_its_traffic():
    """tiny (L 4, D 128, 4 heads of 32, F 512, V 4096, f32, no remat), 8 x 256 tokens on data=2 and context=4."""
    model, train = presets.get("tiny"), TrainConfig(batch_size=8, seq_len=256)
    one = plan(model, train, MeshConfig("data=2"), 2, "h100", 0.4)
    ring = plan(model, train, MeshConfig("data=2,context=4"), 8, "h100", 0.4)
    gather = plan(model, train, MeshConfig("data=2,context=4", context_impl="all_gather"), 8, "h100", 0.4)
    # All-gather: a quarter of each sequence per device, its kernel's logits still over all 256 keys.
    assert gather.activations == one.activations / 4
    # Ring: 4 rows x 64 tokens, each keeping 4 (6 D + 4 A + 6 F) bytes a layer and no logits; the head's 35,840
    # bytes a token (2 x 4 V + 24 D) outweigh one ring block's 9 H x 32 keys.
    assert ring.activations == 4 * 64 * (4 * 4 * (6 * 128 + 4 * 128 + 6 * 512) + 35840)
    # A block of keys and values is b = 2 x 256 tokens x 4 heads x 32 = 65,536 numbers. Ring, per layer: 3 passes of
    # b f32 forward, 3 more and 4 of their f32 gradients backward; all-gather: 3 shards gathered, 3 reduce-scattered.
    # Both add the final hidden states' return to time order, 256 x 128 x 4 bytes forward and backward.
    b, back = 65536, 2 * 256 * 128 * 4
    assert ring.context_bytes == 4 * (6 * b * 4 + 4 * b * 4) + back
    assert gather.context_bytes == 4 * 6 * b * 4 + back
    # The gradient all-reduce spans the context devices too (replicated weights): 2 (8 - 1)/8 of the parameters.
    assert ring.ici_bytes == pytest.approx(2 * 7 / 8 * ring.params + ring.context_bytes)


def test_remat_policies_order_activation_memory():
    model, train = presets.get("gpt3-xl"), TrainConfig(batch_size=8)
    act = {
        r: plan(dataclasses.replace(model, remat=r), train, MeshConfig("fsdp=8"), 8, "h100", 0.4).activations
        for r in ("none", "dots_saveable", "dots_with_no_batch_dims_saveable", "full")
    }
    assert act["none"] > act["dots_saveable"] > act["dots_with_no_batch_dims_saveable"] > act["full"]


def test_plan_command_for_175b_prints_in_seconds(capsys):
    start = time.perf_counter()
    assert (
        main(
            [
                "plan",
                "--preset",
                "gpt3-175b",
                "--mesh",
                "fsdp=-1",
                "--device",
                "tpu-v5p",
                "--chips",
                "1024",
                "--remat",
                "full",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert time.perf_counter() - start < 30
    assert (
        "gpt3-175b on 1024 x tpu v5p, mesh data=1,fsdp=1024,context=1,tensor=1" in out and "of 95 GiB HBM: fits" in out
    )
    assert "XLA" not in out  # 1024 devices are not simulated


def test_plan_command_prints_context_parallel_traffic(capsys):
    argv = ["plan", "--preset", "tiny", "--mesh", "data=2,context=4", "--device", "h100", "--seq-len", "256"]
    assert main(argv + ["--batch", "8", "--xla", "off"]) == 0
    out = capsys.readouterr().out
    assert "mesh data=2,fsdp=1,context=4,tensor=1" in out and "(1/4 of each: context parallelism, 64 tokens)" in out
    assert "of which context" in out and "keys and values passed around the ring" in out


def test_plan_command_json_includes_xla_analysis_for_small_meshes(capsys):
    argv = [
        "plan",
        "--preset",
        "tiny",
        "--mesh",
        "data=2,fsdp=2,tensor=2",
        "--device",
        "h100",
        "--batch",
        "8",
        "--seq-len",
        "64",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["xla"]["total"] > 0 and abs(out["total"] / out["xla"]["total"] - 1) < 0.15


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "tpu-v9"], "unknown device 'tpu-v9'"),
        (["--device", "h100", "--chips", "16"], "uses 8 of the 16 chips"),
        (["--device", "h100", "--batch", "6"], "not divisible by the data-parallel size"),
    ],
)
def test_plan_errors_are_one_line(extra, message, capsys):
    assert main(["plan", "--preset", "tiny", "--mesh", "data=2,fsdp=2,tensor=2", "--xla", "off"] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
