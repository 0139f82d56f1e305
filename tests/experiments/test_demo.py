"""`make demo` end to end: the Makefile's demo recipe, command by command through `meshlm`, then what it promises:
every run of the sweep finished, every model evaluated on every task and number of shots, a fitted law and a report
that shows them.

Two substitutions, both for time: the demo spec's sweep shrunk to tiny budgets on this test's corpus (its rules,
shapes and hold-out kept), and fewer evaluation items and seeds."""

import json
import math
import pathlib
import shlex

import pytest
import yaml

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import report, store
from tests.experiments.sweep.helpers import text_corpus

ROOT = pathlib.Path(__file__).parents[2]
DEMO_SPEC = "experiments/sweeps/demo.yaml"


def demo_recipe() -> list[list[str]]:
    """The demo target's commands, each without the `$(VENV)/bin/meshlm` that runs it."""
    recipe = ROOT.joinpath("Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0].splitlines()[1:]
    commands = [shlex.split(line) for line in recipe]
    assert all(c[0] == "$(VENV)/bin/meshlm" for c in commands), recipe  # every step is a meshlm command
    return [c[1:] for c in commands]


def tiny_demo_spec(path: pathlib.Path, corpus: str, cache: pathlib.Path) -> str:
    spec = yaml.safe_load(ROOT.joinpath(DEMO_SPEC).read_text())
    shapes = spec["budgets"][0]["shapes"]
    spec.update(
        data={"source": corpus, "vocab_size": 300, "cache_dir": str(cache)},
        seq_len=32,
        head_dim=8,
        budgets=[{"flops": 1.6e8, "shapes": shapes}, {"flops": 3.2e8, "shapes": shapes}],
        holdout=[{"flops": 6.4e8, "shapes": spec["holdout"][0]["shapes"]}],
        eval={"sequences": 8, "per_run": 2},
    )
    spec["rules"]["batch"] = {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.slow
def test_the_demo_recipe_sweeps_evaluates_fits_and_reports(tmp_path):
    (tmp_path / "corpus").mkdir()
    spec = tiny_demo_spec(tmp_path / "demo.yaml", text_corpus(tmp_path / "corpus"), tmp_path / "cache")
    out = tmp_path / "runs" / "demo"
    fewer = {"--limit": "4", "--seeds": "1"}
    commands = demo_recipe()
    for argv in commands:
        argv = [spec if a == DEMO_SPEC else str(out) if a == "runs/demo" else a for a in argv]
        argv = [fewer.get(before, a) for before, a in zip(["", *argv], argv)]
        assert main(argv) == 0, argv
    assert [c[:2] for c in commands] == [["sweep", "run"], ["eval", "--sweep"], ["sweep", "fit"]]

    finished = store.observations(out)
    assert len(finished) == 7  # 2 budgets x 3 shapes and the hold-out
    eval_args = commands[1]
    tasks = eval_args[eval_args.index("--tasks") + 1].split(",")
    shots = eval_args[eval_args.index("--shots") + 1].split(",")
    models = json.loads((out / report.EVAL / "results.json").read_text())["models"]
    assert len(models) == len(finished)
    few_shot = [t for t in tasks if t != "icl"]  # icl: the probes (induction, ICL score, per-position loss)
    for model in models:
        assert set(model["results"]) == {*few_shot, "icl_score", "induction", "perplexity"}, model["name"]
        for task in few_shot:
            assert list(model["results"][task]["shots"]) == shots, (model["name"], task)

    fitted = json.loads((out / "fit.json").read_text())
    assert fitted["fitted_runs"] == 6 and fitted["holdout"]
    assert all(math.isfinite(fitted["values"][p]) for p in ("E", "A", "B", "alpha", "beta"))
    text = (out / "report.md").read_text()
    assert text.startswith("# Scaling-law fit") and "## In-context learning of the swept models" in text
    assert all(f"### {section}" in text for section in (*few_shot, "probes"))
