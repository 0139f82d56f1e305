"""The layers import one way: model < parallel < training < experiments. Read from the source with `ast`, so a
function-local import counts as much as a top-level one."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS = ("model", "parallel", "training", "experiments")  # bottom first: each may import the ones before it


def _modules() -> list[pathlib.Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def _meshlm_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, imported meshlm layer) for every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from meshlm import training` names the layer in the alias; otherwise the module names it.
            names = [f"meshlm.{a.name}" for a in node.names] if node.module == "meshlm" else [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "meshlm" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(paths) -> list[str]:
    out = []
    for path in paths:
        own = LAYERS.index(path.relative_to(ROOT).parts[0])
        for line, layer in _meshlm_imports(path):
            if layer in LAYERS and LAYERS.index(layer) > own:
                out.append(f"{path.relative_to(ROOT)}:{line} imports meshlm.{layer}, a layer above its own")
    return out


def test_no_module_imports_a_layer_above_its_own():
    assert _modules(), "found no modules: is ROOT right?"
    assert violations(_modules()) == []


@pytest.mark.parametrize(
    "layer, source",
    [
        ("model", "from meshlm.parallel.constrain import rules_active\n"),
        ("parallel", "def f():\n    from meshlm.training import config\n"),
        ("training", "import meshlm.experiments.cli\n"),
    ],
)
def test_the_check_catches_an_upward_import(layer, source, tmp_path, monkeypatch):
    module = ROOT / layer / "_upward_import_probe.py"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source)
    assert len(violations([module])) == 1
