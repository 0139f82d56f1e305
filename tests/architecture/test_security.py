"""Security, read from the source with `ast`: nothing loads a pickle, no config or spec text is run as code, and
every file a run writes goes through `training/atomic.py` (write a temporary file, then rename)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = sorted(p for layer in ("model", "parallel", "training", "experiments") for p in (ROOT / layer).rglob("*.py"))
PICKLE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "shelve", "marshal", "joblib"}
# Files that write without write_atomic, and why that is safe.
DIRECT_WRITERS = {
    "training/atomic.py": "the atomic writer itself",
    "training/corpus.py": "extracts into a temporary folder that is renamed into place whole",
    "training/metrics.py": "appends to metrics.jsonl; a line cut short by a kill is dropped by the reader",
}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
    return None


def problems(path: pathlib.Path, rel: str = "") -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = rel or str(path.relative_to(ROOT))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{rel}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]
    for call, owner, name in _calls(tree):
        where = f"{rel}:{call.lineno}"
        if name in ("eval", "exec", "compile") and isinstance(call.func, ast.Name):
            found.append(f"{where} calls {name}()")
        if owner == "torch" and name == "load" and _keyword(call, "weights_only") is not True:
            found.append(f"{where} torch.load without weights_only=True")
        if owner in ("np", "numpy", "jnp") and name == "load" and _keyword(call, "allow_pickle") not in (None, False):
            found.append(f"{where} np.load with allow_pickle")
        if owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
            found.append(f"{where} yaml.{name} (use yaml.safe_load)")
        if name == "from_pretrained" and _keyword(call, "use_safetensors") is not True:
            found.append(f"{where} from_pretrained may read a pickled .bin (pass use_safetensors=True)")
        if rel not in DIRECT_WRITERS:
            if name in ("write_text", "write_bytes"):
                found.append(f"{where} {name}() is not atomic: use meshlm.training.atomic.write_atomic")
            mode = call.args[1].value if name == "open" and len(call.args) > 1 else _keyword(call, "mode") or ""
            if name == "open" and isinstance(mode, str) and set(mode) & set("wax"):
                found.append(f"{where} open(..., {mode!r}) is not atomic: use meshlm.training.atomic.write_atomic")
    return found


@pytest.mark.parametrize("path", SOURCE, ids=[str(p.relative_to(ROOT)) for p in SOURCE])
def test_no_pickles_no_eval_and_only_atomic_writes(path):
    assert problems(path) == []


@pytest.mark.parametrize(
    "code, what",
    [
        ("import pickle", "imports pickle"),
        ("from dill import loads", "imports dill"),
        ("eval(text)", "calls eval()"),
        ("exec(text)", "calls exec()"),
        ("torch.load(f)", "torch.load without weights_only"),
        ("torch.load(f, weights_only=False)", "torch.load without weights_only"),
        ("np.load(f, allow_pickle=True)", "np.load with allow_pickle"),
        ("yaml.load(f)", "yaml.load"),
        ("AutoModel.from_pretrained(name)", "from_pretrained may read a pickled"),
        ("path.write_text(s)", "write_text() is not atomic"),
        ("open(p, 'w')", "open(..., 'w') is not atomic"),
    ],
)
def test_the_scan_catches(tmp_path, code, what):
    path = tmp_path / "probe.py"
    path.write_text(code + "\n")
    assert any(what in p for p in problems(path, rel="experiments/probe.py"))
