"""Bad input, tried as a new user would: each case gets one line `meshlm: error: ...` that names the problem and
the fix, exit code 2, no traceback, and every file in the workspace is left as it was (hashed before and after).

One table row per case: (name, argv, words the error must contain). WS in an argument is the workspace, which holds
a trained run, damaged copies of it, corpora good and bad, and a file where a directory should be."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from meshlm.experiments.cli import main
from meshlm.training import atomic
from meshlm.training.trainer import train
from tests.training.helpers import overrides_of, quiet, small_config, text_corpus


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    cache = tmp_path_factory.mktemp("cache")  # data caches live outside the hashed workspace
    (root / "corpus").mkdir()
    corpus = text_corpus(root / "corpus")
    cfg = small_config(corpus, cache, steps=2, **{"model.n_layers": 1})
    train(cfg, root / "run", progress=False, log=quiet)
    (root / "afile").write_text("not a directory\n")
    (root / "garbage.model").write_bytes(b"\x00\x01 not a sentencepiece model")
    for name in ("latin1", "blank", "single"):
        (root / name).mkdir()
    shutil.copy(root / "corpus" / "play00.txt", root / "latin1" / "good.txt")
    (root / "latin1" / "caf\u00e9.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (root / "blank" / "a.txt").write_text("\n\n")
    (root / "blank" / "b.txt").write_text("   \n")
    shutil.copy(root / "corpus" / "play01.txt", root / "single" / "only.txt")
    saved = json.loads((root / "run" / "config.json").read_text())

    def damaged_run(name, config=None, tokenizer=None, checkpoints=True):
        shutil.copytree(
            root / "run", root / name, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints")
        )
        if config is not None:
            (root / name / "config.json").write_text(config)
        if tokenizer is not None:
            (root / name / "tokenizer.model").write_bytes(tokenizer)

    damaged_run("garbled_config", config='{"model": {"n_layers": 1,')
    damaged_run("list_config", config="[1, 2, 3]")
    damaged_run("typed_config", config=json.dumps({**saved, "model": {**saved["model"], "n_layers": "two"}}))
    damaged_run("newer_config", config=json.dumps({**saved, "train": {**saved["train"], "ema": 0.999}}))
    damaged_run("other_model", config=json.dumps({**saved, "model": {**saved["model"], "d_model": 64}}))
    damaged_run("latin1_config", config=None)
    (root / "latin1_config" / "config.json").write_bytes(b'{"preset": "caf\xe9"}')
    damaged_run("bad_tokenizer", tokenizer=b"\x08\x01garbage")
    damaged_run("no_checkpoint", checkpoints=False)
    damaged_run("no_tokenizer")
    (root / "no_tokenizer" / "tokenizer.model").unlink()
    return {"root": root, "corpus": corpus, "cache": cache}


def _train_args(ws, run="new", **extra) -> list[str]:
    cfg = small_config(ws["corpus"], ws["cache"], steps=2, **extra)
    argv = ["train", "--preset", "tiny", "--run-dir", f"WS/{run}", "--no-progress"]
    return argv + [a for item in overrides_of(cfg) for a in ("--set", item)]


# Flags that make `meshlm train` read the workspace's corpora: appended after the small config's own flags.
def _data(name: str) -> list[str]:
    return ["--set", f"data.source=text:WS/{name}/*.txt"]


GEN = ["generate", "--preset", "tiny"]
PLAN = ["plan", "--preset", "tiny", "--mesh", "data=2", "--device", "h100", "--xla", "off"]
SMALL = ["--preset", "tiny", "--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2"]

# (name, argv, required words); "TRAIN" is replaced by the small training config's flags on WS/new.
CASES = [
    # the cases named in the issue
    (
        "train: run dir is a file",
        ["train", "--preset", "tiny", "--run-dir", "WS/afile"],
        "is a file, not a directory; choose another --run-dir",
    ),
    (
        "generate: negative max tokens",
        GEN + ["--max-new-tokens", "-1"],
        "--max-new-tokens: -1 is out of range; use 1 or more",
    ),
    (
        "generate: top-k past the vocabulary",
        GEN + ["--top-k", "100000"],
        "exceeds the vocabulary of 256 tokens; use 0 (all) or at most 256",
    ),
    (
        "bench: zero steps",
        ["bench", "train", "--preset", "tiny", "--steps", "0"],
        "--steps: 0 is out of range; use 1 or more",
    ),
    (
        "generate: negative temperature",
        GEN + ["--temperature", "-1"],
        "--temperature: -1 is out of range; use a number in [0, inf)",
    ),
    ("generate: top-p 0", GEN + ["--top-p", "0"], "--top-p: 0 is out of range; use a number in (0, 1]"),
    ("train: non-UTF-8 corpus", ["TRAIN"] + _data("latin1"), "is not UTF-8 text (byte 0xe9 at offset 3); convert it"),
    # train: paths
    (
        "train: resume a file as run dir",
        ["train", "--run-dir", "WS/afile", "--set", "train.steps=5"],
        "is a file, not a directory",
    ),
    (
        "train: run dir under a file",
        ["train", "--preset", "tiny", "--run-dir", "WS/afile/run"],
        "is a file, so --run-dir",
    ),
    (
        "train: resume nothing",
        ["train", "--run-dir", "WS/nothing_here"],
        "holds no run (no config.json); train one there first",
    ),
    # train: corpora
    ("train: blank corpus", ["TRAIN"] + _data("blank"), "matches only empty or blank files; add text"),
    ("train: one document", ["TRAIN"] + _data("single"), "need at least 2 documents to split train/validation"),
    ("train: glob matches nothing", ["TRAIN"] + _data("no_such_folder"), "matches no files; check the glob"),
    (
        "train: unknown source",
        ["TRAIN", "--data", "ftp://example.org/x"],
        "unknown data source 'ftp://example.org/x'; use shakespeare",
    ),
    # train: config values
    ("train: unknown key", ["TRAIN", "--set", "train.stepz=5"], "unknown config key 'train.stepz'"),
    ("train: not an int", ["TRAIN", "--set", "train.steps=ten"], "--set train.steps='ten': expected int"),
    ("train: zero steps", ["TRAIN", "--set", "train.steps=0"], "train.tokens=0: set exactly one of them"),
    (
        "train: negative lr",
        ["TRAIN", "--set", "train.optimizer.peak_lr=-1"],
        "train.optimizer.peak_lr=-1.0 is out of range; set it to a positive",
    ),
    (
        "train: b2 >= 1",
        ["TRAIN", "--set", "train.optimizer.b2=1.5"],
        "train.optimizer.b2=1.5 is out of range; set it to a value in [0, 1)",
    ),
    ("train: NaN lr", ["TRAIN", "--set", "train.optimizer.peak_lr=nan"], "train.optimizer.peak_lr=nan is out of range"),
    (
        "train: micro-batches",
        ["TRAIN", "--set", "train.micro_batches=3"],
        "train.micro_batches=3 does not divide train.batch_size=4; pick a divisor",
    ),
    ("train: seq_len > n_ctx", ["TRAIN", "--set", "train.seq_len=64"], "exceeds model.n_ctx=32; lower train.seq_len"),
    ("train: dropout 1", ["TRAIN", "--set", "model.dropout=1.0"], "model.dropout=1.0 must be in [0, 1)"),
    ("train: nonfinite mode", ["TRAIN", "--set", "train.nonfinite=maybe"], "expected stop | skip"),
    (
        "train: mesh needs more devices",
        ["TRAIN", "--mesh", "data=3"],
        "needs 3 devices, which does not divide the 8 present; change --mesh",
    ),
    (
        "train: unknown mesh axis",
        ["TRAIN", "--mesh", "pipeline=2"],
        "unknown axis 'pipeline'; the axes are data, fsdp, context, tensor",
    ),
    ("train: section as value", ["TRAIN", "--set", "train.optimizer=adam"], "is a section; set one of its fields"),
    # train: tokenizers and vocabularies
    (
        "train: tokenizer not sentencepiece",
        ["TRAIN", "--set", "data.tokenizer=WS/garbage.model"],
        "is neither a sentencepiece model nor a tokenizer.json; point data.tokenizer at one of them",
    ),
    (
        "train: tokenizer missing",
        ["TRAIN", "--set", "data.tokenizer=WS/missing.model"],
        "does not exist; point data.tokenizer at a sentencepiece .model",
    ),
    (
        "train: tokenizer larger than the model",
        [
            "TRAIN",
            "--set",
            "data.tokenizer=WS/run/tokenizer.model",
            "--set",
            "model.vocab_size=256",
            "--set",
            "data.vocab_size=256",
        ],
        "the tokenizer has 300 tokens but model.vocab_size=256; raise model.vocab_size",
    ),
    (
        "train: data vocab > model vocab",
        ["TRAIN", "--set", "data.vocab_size=1000"],
        "exceeds model.vocab_size=384; set --set data.vocab_size=384 or --set model.vocab_size=1024",
    ),
    # train: existing runs and their config files
    (
        "train: another preset on a run",
        ["train", "--preset", "tiny-modern", "--run-dir", "WS/run"],
        "already holds a run with a different config (sections differing: model",
    ),
    ("train: config not JSON", ["train", "--run-dir", "WS/garbled_config"], "config.json is not valid JSON (Expecting"),
    (
        "train: config not an object",
        ["train", "--run-dir", "WS/list_config"],
        "config section 'root' is a list, not an object of fields",
    ),
    (
        "train: config mistyped",
        ["train", "--run-dir", "WS/typed_config"],
        "config field model.n_layers='two' should be int; fix it in the config file",
    ),
    (
        "train: config from a newer meshlm",
        ["train", "--run-dir", "WS/newer_config"],
        "unknown keys ['ema'] in saved TrainConfig",
    ),
    (
        "train: config not UTF-8",
        ["train", "--run-dir", "WS/latin1_config"],
        "config.json is not UTF-8 JSON text; restore it from a copy",
    ),
    (
        "train: checkpoint of another model",
        ["train", "--run-dir", "WS/other_model"],
        "does not fit this model: params/",
    ),
    # generate
    ("generate: zero tokens", GEN + ["--max-new-tokens", "0"], "--max-new-tokens: 0 is out of range; use 1 or more"),
    (
        "generate: max tokens not a number",
        GEN + ["--max-new-tokens", "many"],
        "--max-new-tokens: 'many' is not an integer",
    ),
    ("generate: negative top-k", GEN + ["--top-k", "-1"], "--top-k: -1 is out of range; use 0 or more"),
    ("generate: NaN temperature", GEN + ["--temperature", "nan"], "--temperature: nan is out of range"),
    ("generate: top-p above 1", GEN + ["--top-p", "1.5"], "--top-p: 1.5 is out of range; use a number in (0, 1]"),
    (
        "generate: preset with a small vocab",
        GEN + ["--set", "model.vocab_size=128", "--set", "data.vocab_size=128"],
        "needs model.vocab_size >= 256",
    ),
    ("generate: prompt too long", GEN + ["--prompt", "x" * 300], "exceeds the model's n_ctx=256; shorten the prompt"),
    ("generate: run dir is a file", ["generate", "--run-dir", "WS/afile"], "is a file, not a run directory"),
    ("generate: no run", ["generate", "--run-dir", "WS/nothing_here"], "holds no run (no config.json)"),
    (
        "generate: no checkpoint",
        ["generate", "--run-dir", "WS/no_checkpoint"],
        "has no finished checkpoint yet; train longer",
    ),
    (
        "generate: garbled tokenizer",
        ["generate", "--run-dir", "WS/bad_tokenizer"],
        "is neither a sentencepiece model nor a tokenizer.json",
    ),
    ("generate: missing tokenizer", ["generate", "--run-dir", "WS/no_tokenizer"], "tokenizer.model does not exist"),
    (
        "generate: checkpoint of another model",
        ["generate", "--run-dir", "WS/other_model"],
        "does not fit this model: params/",
    ),
    (
        "generate: --set on a run",
        ["generate", "--run-dir", "WS/run", "--set", "model.n_layers=3"],
        "a run directory's config is fixed: drop --set",
    ),
    ("generate: config not JSON", ["generate", "--run-dir", "WS/garbled_config"], "is not valid JSON"),
    # plan
    ("plan: zero chips", PLAN + ["--chips", "0"], "--chips: 0 is out of range; use 1 or more"),
    ("plan: MFU above 1", PLAN + ["--mfu", "1.5"], "--mfu: 1.5 is out of range; use a number in (0, 1]"),
    ("plan: zero batch", PLAN + ["--batch", "0"], "--batch: 0 is out of range"),
    ("plan: negative sequence", PLAN + ["--seq-len", "-5"], "--seq-len: -5 is out of range"),
    ("plan: unknown remat", PLAN + ["--remat", "some"], "expected none | full | dots_saveable"),
    (
        "plan: mesh size not a number",
        ["plan", "--preset", "tiny", "--mesh", "data=x", "--device", "h100"],
        "'data=x' is not AXIS=SIZE with an integer size",
    ),
    ("plan: unknown device", PLAN[:-4] + ["--device", "tpu-v9", "--xla", "off"], "unknown device 'tpu-v9'; use one of"),
    # bench
    (
        "bench: negative warmup",
        ["bench", "train"] + SMALL + ["--warmup", "-1"],
        "--warmup: -1 is out of range; use 0 or more",
    ),
    ("bench: zero decode batch", ["bench", "decode"] + SMALL + ["--batch", "0"], "--batch: 0 is out of range"),
    ("bench: zero new tokens", ["bench", "decode"] + SMALL + ["--new-tokens", "0"], "--new-tokens: 0 is out of range"),
    ("bench: zero layers", ["bench", "compile"] + SMALL + ["--layers", "0"], "--layers: 0 is out of range"),
    (
        "bench: zero CPU devices",
        ["bench", "train"] + SMALL + ["--cpu-devices", "0"],
        "--cpu-devices: 0 is out of range",
    ),
    ("bench: unknown kind", ["bench", "fly"], "invalid choice: 'fly'"),
    # info and --set
    ("info: nothing asked", ["info"], "meshlm info needs --preset NAME or --list"),
    ("info: unknown preset", ["info", "--preset", "gpt9"], "unknown preset 'gpt9'"),
    ("info: zero heads", ["info", "--preset", "tiny", "--set", "model.n_heads=0"], "model.n_heads=0 must be positive"),
    (
        "info: --set without =",
        ["info", "--preset", "tiny", "--set", "model.d_model"],
        "is not of the form key.path=value",
    ),
    (
        "info: unknown attention",
        ["info", "--preset", "tiny", "--set", "model.attention=flash9"],
        "unknown attention variant 'flash9'",
    ),
    (
        "info: bool not a bool",
        ["info", "--preset", "tiny", "--set", "model.bias=maybe"],
        "--set model.bias='maybe': expected bool",
    ),
]


def _resolve(argv: list[str], ws) -> list[str]:
    out = []
    for arg in argv:
        out += _train_args(ws) if arg == "TRAIN" else [arg.replace("WS", str(ws["root"]))]
    return out


def _hashes(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _assert_one_line_error(err: str, words: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("meshlm")]
    assert len(lines) == 1 and lines[0].startswith("meshlm: error: "), err
    assert words in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_that_names_the_fix_and_changes_no_file(ws, name, argv, words, capsys):
    before = _hashes(ws["root"])
    capsys.readouterr()
    assert main(_resolve(argv, ws)) == 2
    _assert_one_line_error(capsys.readouterr().err, words)
    assert _hashes(ws["root"]) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "error, words",
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EACCES, "Permission denied"),
        (errno.EROFS, "Read-only file system"),
    ],
    ids=["disk full", "not writable", "read-only"],
)
def test_a_disk_that_refuses_writes_is_one_line_and_a_new_run_leaves_no_trace(ws, monkeypatch, capsys, error, words):
    def refuse(path, data):
        raise OSError(error, os.strerror(error), str(path))

    # Every file a run writes itself goes through write_atomic: refuse them all, as a full or read-only disk would.
    monkeypatch.setattr(atomic, "write_atomic", refuse)
    for module in ("meshlm.training.config", "meshlm.training.tokenizer", "meshlm.training.metrics"):
        monkeypatch.setattr(f"{module}.write_atomic", refuse)
    before = _hashes(ws["root"])
    capsys.readouterr()
    assert main(_resolve(["TRAIN"], ws)) == 2
    _assert_one_line_error(capsys.readouterr().err, words)
    assert _hashes(ws["root"]) == before  # WS/new was created, then removed: nothing of it is left


def test_errors_reach_the_shell_as_exit_code_2_without_a_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    for argv, words in [
        (["bench", "train", "--preset", "tiny", "--steps", "0"], "--steps: 0 is out of range"),
        (["train", "--preset", "tiny", "--run-dir", str(tmp_path / "afile")], "is a file, not a directory"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "meshlm.experiments.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2
        _assert_one_line_error(proc.stderr, words)
