"""The layers import one way: model < parallel < training < experiments. Read from the source with `ast`, so a
function-local import counts as much as a top-level one."""

import pathlib

import pytest

from tests.architecture.imports import LAYERS, ROOT, meshlm_imports, modules


def violations(paths) -> list[str]:
    out = []
    for path in paths:
        own = LAYERS.index(path.relative_to(ROOT).parts[0])
        for line, name in meshlm_imports(path):
            layer = name.split(".")[1]
            if layer in LAYERS and LAYERS.index(layer) > own:
                out.append(f"{path.relative_to(ROOT)}:{line} imports meshlm.{layer}, a layer above its own")
    return out


def test_no_module_imports_a_layer_above_its_own():
    assert modules(), "found no modules: is ROOT right?"
    assert violations(modules()) == []


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
