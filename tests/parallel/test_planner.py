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
    ],
)
def test_planner_agrees_with_xla_memory_analysis_within_15_percent(mesh, remat):
    model = dataclasses.replace(presets.get("tiny"), remat=remat)
    train = TrainConfig(batch_size=16, seq_len=256)
    estimate = plan(model, train, mesh, 8, "h100", 0.4)
    xla = setup_lib.build(Config(model=model, train=train, mesh=mesh), Partitioner.build(mesh)).memory_analysis()
    # XLA's arguments: exactly the planner's parameters and optimizer state, this device's 4 batch arrays of
    # 16 / data-parallel rows, and a few scalars (step, rng, optimizer counts).
    rows = 16 // (estimate.mesh["data"] * estimate.mesh["fsdp"])
    assert xla["arguments"] == pytest.approx(estimate.params + estimate.optimizer + 4 * rows * 256 * 4, abs=64)
    assert abs(estimate.total / xla["total"] - 1) < 0.15, (estimate.total, xla)


def test_fsdp_plan_splits_175b_state_over_1024_chips():
    model = presets.get("gpt3-175b")
    p = plan(model, TrainConfig(batch_size=1024), MeshConfig("fsdp=-1"), 1024, "tpu-v5p", 0.4)
    total_params = count_params(model).total
    assert p.chips == 1024 and p.mesh == dict(data=1, fsdp=1024, tensor=1)
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
    assert "gpt3-175b on 1024 x tpu v5p, mesh data=1,fsdp=1024,tensor=1" in out and "of 95 GiB HBM: fits" in out
    assert "XLA" not in out  # 1024 devices are not simulated


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
