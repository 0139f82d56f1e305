"""Meshes over slices (`dcn_data=N`): FSDP and tensor groups stay inside a slice, data crosses them, training equals
single-device training, and the planner puts the gradient all-reduce on DCN. CPU devices belong to no slice, so
the tests assign them: even ids to slice 0, odd to slice 1, which a plain row-major mesh would mix inside every
FSDP or tensor group."""

import json

import jax
import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.model import presets
from meshlm.model.errors import ConfigError
from meshlm.model.flops import count_params
from meshlm.parallel.config import AXES, MeshConfig
from meshlm.parallel.planner import plan
from meshlm.parallel.sharding import Partitioner
from meshlm.training.config import TrainConfig
from tests.parallel.helpers import TRAIN, run

MESHES = ["dcn_data=2,fsdp=4", "dcn_data=2,fsdp=2,tensor=2"]


def interleaved(device) -> int:
    return device.id % 2


def _slices_of_groups(mesh, axis: str) -> list[set[int]]:
    """For each group of devices that differ only along `axis`, the slices its devices lie in."""
    slices = np.moveaxis(np.vectorize(interleaved)(mesh.devices), AXES.index(axis), -1)
    return [set(group) for group in slices.reshape(-1, mesh.shape[axis])]


@pytest.mark.parametrize("shape", MESHES)
def test_fsdp_and_tensor_groups_lie_inside_one_slice_and_data_crosses_them(shape):
    mesh = Partitioner.build(MeshConfig(shape), slice_of=interleaved).mesh
    assert dict(mesh.shape) == MeshConfig(shape).axis_sizes(8) and mesh.shape["data"] == 2
    assert all(isinstance(d, jax.Device) for d in mesh.devices.flat)  # the real devices, not create_hybrid's view
    for axis in ("fsdp", "tensor"):
        assert all(len(slices) == 1 for slices in _slices_of_groups(mesh, axis)), axis
    assert all(slices == {0, 1} for slices in _slices_of_groups(mesh, "data"))


@pytest.mark.slow
def test_training_over_slices_equals_single_device_training():
    losses, params, state = run(MeshConfig(MESHES[-1]), TRAIN.steps, slice_of=interleaved)
    ref_losses, ref_params, _ = run(None, TRAIN.steps)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    errors = jax.tree.map(lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b)), params[-1], ref_params[-1])
    assert max(jax.tree.leaves(errors)) <= 1e-5, errors
    w_in = state.params["blocks"]["mlp"]["w_in"].sharding
    assert "fsdp" in str(w_in.spec) and {interleaved(d) for d in w_in.mesh.devices[0].flat} == {0}


@pytest.mark.parametrize(
    "shape, slice_of, message",
    [
        ("dcn_data=4,fsdp=2", interleaved, "spreads data over 4 slices, but the 8 devices lie in 2; set dcn_data=2"),
        ("dcn_data=2,fsdp=4", None, "lie in 1; drop dcn_data"),  # CPU devices of one process: one slice
        ("dcn_data=2,fsdp=2", interleaved, "uses 4 of the 8 devices"),
        ("dcn_data=2,fsdp=4", lambda d: int(d.id < 3), "they hold [3, 5] devices"),
        ("dcn_data=3,fsdp=-1", interleaved, "needs 3 devices, which does not divide the 8 present"),
        ("dcn_data=-1,fsdp=4", interleaved, "dcn_data=-1; give the number of slices"),
    ],
)
def test_a_mesh_that_does_not_fit_the_slices_is_a_one_line_error(shape, slice_of, message):
    kwargs = {} if slice_of is None else {"slice_of": slice_of}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        Partitioner.build(MeshConfig(shape), **kwargs)
    assert "\n" not in str(e.value)


def test_the_dcn_all_reduce_time_is_the_ring_formula():
    model, train = presets.get("tiny"), TrainConfig(batch_size=16, seq_len=64)
    p = plan(model, train, MeshConfig("dcn_data=4,fsdp=2"), 8, "tpu-v5p", 0.4)
    gradient = count_params(model).total * 4  # f32, the whole gradient, which every slice holds
    # 2 (n - 1)/n x the gradient for n = 4 slices, sent over a slice's 2 chips x 50 Gb/s (v5p's data sheet).
    assert p.slices == 4 and p.dcn_bytes == pytest.approx(1.5 * gradient)
    assert p.dcn_time == pytest.approx(1.5 * gradient / (2 * 50e9 / 8))


def test_data_over_slices_moves_the_gradient_all_reduce_from_ici_to_dcn():
    model, train = presets.get("tiny"), TrainConfig(batch_size=16, seq_len=64)
    one, two = (plan(model, train, MeshConfig(s), 8, "tpu-v5p", 0.4) for s in ("data=2,fsdp=4", "dcn_data=2,fsdp=4"))
    assert one.mesh == two.mesh and one.total == two.total
    assert one.dcn_bytes == 0 and two.dcn_bytes == count_params(model).total * 4
    # Inside a slice the 2 data replicas' all-reduce, 2 (2 - 1)/2 x the device's gradient, is gone.
    assert one.ici_bytes - two.ici_bytes == pytest.approx(one.grads)


@pytest.mark.slow
def test_plan_command_reports_the_dcn_time_and_compiles_the_sliced_mesh(capsys):
    argv = ["plan", "--preset", "tiny", "--mesh", "dcn_data=2,fsdp=4", "--device", "tpu-v5p", "--seq-len", "64"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["slices"] == 2 and out["dcn_time"] == pytest.approx(out["dcn_bytes"] / (4 * 50e9 / 8))
    assert out["xla"]["total"] > 0  # XLA's analysis ran on the 8 CPU devices cut into 2 slices
    assert main(argv + ["--xla", "off"]) == 0
    text = capsys.readouterr().out
    assert "data over 2 slices" in text and "over DCN at 4 chips x 6.25 GB/s" in text
