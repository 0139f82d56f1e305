"""experiments/ shows its parts: the CLI's table, one module per command, and libraries with a stated order. Commands
import libraries, never each other; each library imports only the ones before it; no module cycle anywhere."""

import importlib
import pathlib
import subprocess
import sys

import pytest

from meshlm.experiments import cli
from tests.architecture.imports import ROOT, meshlm_imports, module_name, modules

EXPERIMENTS = ROOT / "experiments"
# Bottom first: a part may import itself and the parts of earlier levels, never a sibling of its own level (the sweep
# report reads the evaluation's results.md; it does not import evaluation code). `commands` may import every library;
# `cli` imports commands only by name, through COMMANDS.
LEVELS = (("convert",), ("evaluation", "sweep"), ("reference",), ("bench",), ("studies",), ("commands",), ("cli",))
LEVEL = {part: i for i, level in enumerate(LEVELS) for part in level}


def _part(name: str) -> str | None:
    """The part of experiments/ a dotted module name belongs to (None for the package itself)."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "experiments" else None


def _is_command(name: str) -> bool:
    return _part(name) == "commands" and len(name.split(".")) == 4 and not name.split(".")[3].startswith("_")


def violations(paths) -> list[str]:
    out = []
    for path in paths:
        own_name = module_name(path)
        own = _part(own_name)
        if own is None:
            continue
        for line, name in meshlm_imports(path):
            part = _part(name)
            where = f"{path.relative_to(ROOT)}:{line}"
            if part is None:
                continue
            if part not in LEVEL or own not in LEVEL:
                out.append(f"{where}: {own_name} or {name} is in no part of LEVELS; add the new part to the order")
            elif part != own and LEVEL[part] >= LEVEL[own]:
                out.append(f"{where} imports {name}: {part} is not below {own} in the order")
            elif _is_command(name) and name != own_name:
                out.append(f"{where} imports the command {name}: move what both need into a library")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(paths) -> dict[str, set[str]]:
    return {module_name(p): {name for _, name in meshlm_imports(p)} - {module_name(p)} for p in paths}


def test_experiments_parts_import_in_the_stated_order():
    paths = sorted(EXPERIMENTS.rglob("*.py"))
    assert {_part(module_name(p)) for p in paths} - {None} <= set(LEVEL)
    assert violations(paths) == []


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(modules())) == []


@pytest.mark.parametrize(
    "where, source",
    [
        ("sweep/_probe.py", "from meshlm.experiments.evaluation import report\n"),  # a library importing a later one
        ("convert/_probe.py", "def f():\n    from meshlm.experiments.bench import timing\n"),
        ("commands/_probe.py", "from meshlm.experiments.commands import train\n"),  # a command imported
        ("evaluation/_probe.py", "import meshlm.experiments.commands.eval\n"),
    ],
)
def test_the_check_catches_an_import_against_the_order(where, source, monkeypatch):
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source)
    assert len(violations([EXPERIMENTS / where])) == 1


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_command_module_is_in_the_table_and_has_its_parts():
    files = {p.stem for p in (EXPERIMENTS / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert files == {c.module for c in cli.COMMANDS.values()}
    for name, command in cli.COMMANDS.items():
        module = importlib.import_module(f"meshlm.experiments.commands.{command.module}")
        assert callable(module.add_arguments) and callable(module.run) and module.DESCRIPTION, name


def test_help_lists_every_command_and_imports_no_numerical_library():
    probe = (
        "import sys, contextlib, io\n"
        "from meshlm.experiments.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = main(['--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'jax', 'scipy', 'flax', 'optax', 'torch'})\n"
        "print(code, heavy)\n"
        "print(out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    first, help_text = proc.stdout.split("\n", 1)
    assert first == "0 []"
    assert all(name in help_text for name in cli.COMMANDS)
