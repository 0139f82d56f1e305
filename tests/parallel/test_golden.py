"""Every parameter's PartitionSpec, per preset and strategy, pinned in golden/<preset>.json.

Each dimension reads `logical=mesh axes`, e.g. "layers embed=fsdp qkv heads=tensor kv" for w_qkv.

After an intended change to the rules or the model, regenerate and review the diff:
    MESHLM_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/parallel/test_golden.py
"""

import json
import os
import pathlib

import pytest

from meshlm.model import presets
from meshlm.model.transformer import ACTIVATION_AXES
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.rules import partition, rules_for
from meshlm.parallel.sharding import flat_params, param_specs

GOLDEN = pathlib.Path(__file__).parent / "golden"
DEVICES = 8
STRATEGIES = {
    "data": MeshConfig("data=8"),
    "fsdp": MeshConfig("fsdp=8"),
    "tensor": MeshConfig("data=4,tensor=2"),
    "data_fsdp_tensor": MeshConfig("data=2,fsdp=2,tensor=2"),
    "data_fsdp_tensor_sequence": MeshConfig("data=2,fsdp=2,tensor=2", sequence_parallel=True),
}


def _describe(spec, names) -> str:
    return " ".join(
        n if e is None else f"{n}={'+'.join(e) if isinstance(e, tuple) else e}" for n, e in zip(names, spec)
    )


def _snapshot(name: str) -> dict:
    model = presets.get(name)
    names = {path: axes for path, (_, axes) in flat_params(model).items()}
    out = {}
    for strategy, mesh in STRATEGIES.items():
        params = {path: _describe(spec, names[path]) for path, spec in param_specs(model, mesh, DEVICES).items()}
        dims = partition((64, model.n_ctx, model.d_model), ACTIVATION_AXES, mesh.axis_sizes(DEVICES), rules_for(mesh))
        params["x_BTD (64 rows)"] = _describe([d or None for d in dims], ACTIVATION_AXES)
        out[f"{strategy}: {mesh.shape}" + (" sequence_parallel" if mesh.sequence_parallel else "")] = params
    return out


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_partition_specs_match_golden(name):
    path = GOLDEN / f"{name}.json"
    snapshot = _snapshot(name)
    if os.environ.get("MESHLM_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(snapshot, indent=1) + "\n")
    assert path.exists(), f"no golden file {path}; create it with MESHLM_REGEN_GOLDEN=1"
    assert snapshot == json.loads(path.read_text()), (
        f"specs of {name} changed; if intended, regenerate (see this file's docstring)"
    )
