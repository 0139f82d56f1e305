"""meshlm's import picture, read from the source with `ast`: function-local imports count as much as top-level ones."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS = ("model", "parallel", "training", "experiments")  # bottom first: each may import the ones before it


def modules() -> list[pathlib.Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("meshlm",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def _exists(name: str) -> bool:
    """Whether a dotted meshlm name is a module or package of this tree."""
    path = ROOT.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def meshlm_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, imported meshlm module) for every import in the file, at any depth; `from P import M` names P.M when M
    is a module, else P."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}" if _exists(f"{node.module}.{a.name}") else node.module for a in node.names
            ]
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "meshlm" and "." in name]
    return found
