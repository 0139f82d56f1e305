"""Every sharding API call lives in parallel/: no other module names jax.sharding, places arrays (device_put,
make_array_from_process_local_data), constrains them, builds a mesh, maps over one (shard_map) or calls a collective
across its devices (ppermute, all_gather, ...). Read from the source with `ast`."""

import ast
import pathlib

import pytest

from tests.architecture.imports import ROOT, modules

SHARDING_NAMES = {
    "NamedSharding",
    "PartitionSpec",
    "PositionalSharding",
    "SingleDeviceSharding",
    "Mesh",
    "AbstractMesh",
    "device_put",
    "make_array_from_process_local_data",
    "make_array_from_single_device_arrays",
    "make_array_from_callback",
    "with_sharding_constraint",
    "make_mesh",
    "shard_map",
    "create_device_mesh",
    "create_hybrid_device_mesh",
    "ppermute",
    "all_gather",
    "all_to_all",
    "psum",
    "psum_scatter",
    "axis_index",
}
SHARDING_MODULES = ("jax.sharding", "jax.experimental.mesh_utils", "jax.experimental.shard_map")


def violations(paths) -> list[str]:
    """One line per source line that uses the sharding API outside parallel/."""
    out = {}
    for path in paths:
        where = path.relative_to(ROOT)
        if where.parts[0] == "parallel":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found = None
            if isinstance(node, ast.Import):
                found = next((a.name for a in node.names if a.name.startswith(SHARDING_MODULES)), None)
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith(SHARDING_MODULES):
                    found = node.module
                elif node.module.split(".")[0] == "jax":
                    found = next(
                        (
                            a.name
                            for a in node.names
                            if a.name in SHARDING_NAMES or f"{node.module}.{a.name}".startswith(SHARDING_MODULES)
                        ),
                        None,
                    )
            elif isinstance(node, ast.Attribute) and node.attr in SHARDING_NAMES | {"sharding"}:
                owner = ast.unparse(node.value)
                if owner.split(".")[0] == "jax" and (node.attr != "sharding" or owner == "jax"):
                    found = f"{owner}.{node.attr}"
            if found:
                out.setdefault((str(where), node.lineno), f"{where}:{node.lineno} uses {found}: call parallel/ instead")
    return sorted(out.values())


def test_no_sharding_api_outside_parallel():
    assert violations(modules()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from jax.sharding import NamedSharding\n",
        "import jax\nx = jax.device_put(1, None)\n",
        "import jax\ndef f(x):\n    return jax.lax.with_sharding_constraint(x, None)\n",
        "import jax\nspec = jax.sharding.PartitionSpec()\n",
        "from jax.experimental import mesh_utils\n",
        "import jax\ndef f(x):\n    return jax.lax.ppermute(x, 'context', [(0, 1), (1, 0)])\n",
    ],
)
def test_the_check_catches_a_sharding_call(source, monkeypatch):
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source)
    assert len(violations([ROOT / "training" / "_probe.py"])) == 1
