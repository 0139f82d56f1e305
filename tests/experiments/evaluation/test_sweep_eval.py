"""`meshlm eval --sweep DIR`: every finished run of a sweep, named by its size, on a built-in task and a standard
benchmark from a file; each model's scores equal `meshlm eval --run-dir` of its run; the sweep report embeds them."""

import json

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import report, runner, store
from tests.experiments.evaluation import standard_fixtures as fx
from tests.experiments.sweep.helpers import text_corpus, write_spec

pytestmark = pytest.mark.slow


def test_a_sweeps_models_are_evaluated_by_size_as_each_run_alone_would_be(tmp_path):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    shapes = [{"d_model": 16, "n_layers": 1}, {"d_model": 16, "n_layers": 2}]
    spec = write_spec(tmp_path / "spec.yaml", text_corpus(corpus_dir), tmp_path / "cache", shapes=shapes)
    sweep = tmp_path / "sweep"
    assert main(["sweep", "run", spec, "--out", str(sweep)]) == 0
    arc = tmp_path / "arc.jsonl"
    fx.write(fx.ARC, arc)
    args = ["--tasks", f"label_mapping,arc_easy:{arc}", "--shots", "0,2", "--limit", "4", "--no-progress"]
    assert main(["eval", "--sweep", str(sweep), *args]) == 0

    models = json.loads((sweep / report.EVAL / "results.json").read_text())["models"]
    runs = sorted(store.observations(sweep), key=lambda o: o.N)
    assert [m["run_dir"] for m in models] == [str(sweep / runner.RUNS / o.run_id) for o in runs]
    assert [m["name"] for m in models] == [f"N={o.N:.3g} D={o.D:.3g}" for o in runs]
    alone = tmp_path / "alone"
    assert main(["eval", "--run-dir", str(sweep / runner.RUNS / runs[1].run_id), "--out", str(alone), *args]) == 0
    expected = json.loads((alone / "results.json").read_text())["models"][0]["results"]
    for task in ("label_mapping", "arc_easy"):
        for k in ("0", "2"):
            got, want = models[1]["results"][task]["shots"][k]["metrics"], expected[task]["shots"][k]["metrics"]
            assert {m: v["mean"] for m, v in got.items()} == {m: v["mean"] for m, v in want.items()}, (task, k)

    section = "\n".join(report._icl_section(sweep / report.EVAL))
    assert "### arc_easy" in section and "### label_mapping" in section
