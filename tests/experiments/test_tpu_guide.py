"""docs/tpu.md's promise: every `meshlm` command outside a block marked "needs a TPU" is one this test runs.

Two substitutions, both for data: a train command gets this test's small corpus instead of the default one (which
it would download), and a sweep gets a tiny spec on that corpus in place of the demo spec's path."""

import pathlib
import re
import shlex

import pytest

from meshlm.experiments import cli
from tests.experiments.sweep.helpers import write_spec
from tests.training.helpers import text_corpus

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "tpu.md"


def runnable_commands(text: str) -> list[str]:
    """The `meshlm ...` commands of code blocks whose paragraph above does not say it needs a TPU."""
    parts = text.split("```")
    commands = []
    for before, block in zip(parts[0::2], parts[1::2]):
        above = before.strip().split("\n\n")[-1].lower()
        if "needs" in above and "tpu" in above:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            found = re.search(r"\bmeshlm [^;#]*", line)
            if found:
                commands.append(found.group(0).strip())
    return commands


def test_the_guide_marks_what_needs_a_tpu_and_names_the_commands_run_here():
    commands = runnable_commands(GUIDE.read_text())
    assert all("gcloud" not in c and "xpk" not in c and "--coordinator auto" not in c for c in commands), commands
    assert [c.split()[1] for c in commands] == ["plan", "plan", "plan", "train", "train", "sweep", "sweep", "sweep"], (
        commands
    )


@pytest.mark.slow
def test_every_command_outside_the_tpu_blocks_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    corpus = text_corpus(tmp_path / "corpus")
    data = ["data.source=" + corpus, "data.vocab_size=300", f"data.cache_dir={tmp_path / 'cache'}"]
    spec = write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache")
    for command in runnable_commands(GUIDE.read_text()):
        argv = shlex.split(command)[1:]
        if argv[0] == "train" and "--help" not in argv:
            argv += [x for item in data + ["model.vocab_size=384"] for x in ("--set", item)]
        argv = [spec if a == "experiments/sweeps/demo.yaml" else a for a in argv]
        assert cli.main(argv) == 0, command
    out = capsys.readouterr().out
    assert "dcn" in out.lower() and "coordinator" in out  # the multi-slice plan, and train --help
    assert "done" in out  # the sweep's one run, listed by status
