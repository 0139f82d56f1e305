"""Mesh specs parse to axis sizes; every invalid mesh, model or batch combination is a one-line error naming the fix."""

import pytest

from meshlm.experiments.cli import main
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.checks import check_mesh
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.rules import RULES, partition, rules_for


@pytest.mark.parametrize(
    "shape, sizes",
    [
        ("data=-1", dict(data=8, fsdp=1, context=1, tensor=1)),
        ("data=2,fsdp=2,tensor=2", dict(data=2, fsdp=2, context=1, tensor=2)),
        ("tensor=2, fsdp=-1", dict(data=1, fsdp=4, context=1, tensor=2)),
        ("data=4", dict(data=4, fsdp=1, context=1, tensor=1)),  # a mesh smaller than the machine uses its first devices
        ("", dict(data=1, fsdp=1, context=1, tensor=1)),
        ("data=2,context=-1", dict(data=2, fsdp=1, context=4, tensor=1)),
    ],
)
def test_mesh_shapes_resolve_against_the_device_count(shape, sizes):
    assert MeshConfig(shape).axis_sizes(8) == sizes


@pytest.mark.parametrize(
    "shape, message",
    [
        ("data=3", "needs 3 devices, which does not divide the 8 present"),
        ("fsdp=3,data=-1", "needs 3 devices, which does not divide the 8 present"),
        ("pipeline=2", "unknown axis 'pipeline'"),
        ("data=2,data=4", "names axis 'data' twice"),
        ("data=-1,fsdp=-1", "only one axis may be -1"),
        ("data=two", "is not AXIS=SIZE"),
        ("data=0", "sizes are positive"),
    ],
)
def test_bad_mesh_shapes_are_one_line_errors(shape, message):
    with pytest.raises(ConfigError, match=message) as e:
        MeshConfig(shape).axis_sizes(8)
    assert "\n" not in str(e.value)


def test_sequence_parallel_needs_a_tensor_axis():
    with pytest.raises(ConfigError, match="has tensor=1"):
        MeshConfig("data=8", sequence_parallel=True).axis_sizes(8)


MODEL = ModelConfig(vocab_size=128, n_ctx=64, n_layers=2, d_model=60, n_heads=6)


@pytest.mark.parametrize(
    "shape, sp, batch, micro, seq, processes, message",
    [
        ("tensor=4,data=2", False, 8, 1, 64, 1, "tensor=4 does not divide model.n_heads=6"),
        ("fsdp=8", False, 8, 1, 64, 1, "fsdp=8 does not divide model.d_model=60"),
        ("data=8", False, 12, 1, 64, 1, "not divisible by the data-parallel size data\\*fsdp=8"),
        ("data=4,fsdp=2", False, 16, 4, 64, 1, "gives 4 sequences per micro-batch"),
        ("data=4,tensor=2", True, 8, 1, 63, 1, "train.seq_len=63 over tensor=2"),
        ("data=1,tensor=2", False, 8, 1, 64, 2, "not a multiple of the 2 processes"),
    ],
)
def test_mesh_model_and_batch_mismatches_are_one_line_errors(shape, sp, batch, micro, seq, processes, message):
    sizes = MeshConfig(shape, sp).axis_sizes(8 if processes == 1 else 2)
    with pytest.raises(ConfigError, match=message) as e:
        check_mesh(
            sizes,
            sequence_parallel=sp,
            model=MODEL,
            batch_size=batch,
            micro_batches=micro,
            seq_len=seq,
            process_count=processes,
        )
    assert "\n" not in str(e.value)


def test_earlier_rules_win_and_a_mesh_axis_splits_one_dimension():
    sizes = dict(data=2, fsdp=4, tensor=2)
    rules = rules_for(MeshConfig("data=2,fsdp=4,tensor=2"))
    # w_in: embed takes fsdp; mlp takes tensor, and fsdp is not used twice.
    assert partition((2, 64, 256), ("layers", "embed", "mlp"), sizes, rules) == ((), ("fsdp",), ("tensor",))
    # A bias alone on its mlp axis gets both, in table order.
    assert partition((2, 256), ("layers", "mlp"), sizes, rules) == ((), ("tensor", "fsdp"))
    # A dimension an axis does not divide stays whole (3 rows of prompts), the next candidate is tried.
    assert partition((3, 16, 64), ("act_batch", "act_seq", "act_embed"), sizes, rules) == ((), (), ())
    assert partition((4, 16, 6), ("layers", "kv", "embed"), sizes, RULES["fsdp"]) == ((), ("fsdp",), ())


def test_cli_reports_a_bad_mesh_on_one_line(tmp_path, capsys):
    argv = ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--mesh", "data=3", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mesh 'data=3' needs 3 devices" in err and err.count("\n") == 1
