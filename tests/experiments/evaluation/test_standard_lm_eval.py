"""hellaswag, arc_easy, arc_challenge, piqa, winogrande, race, storycloze_2016, storycloze_2018 and triviaqa read
from files in their upstream schemas, scored by `meshlm eval` and by lm-eval's own task definitions (its YAML and
utils.py, pointed at the same files) with its `hf` model on the same converted random GPT-2, at 0 and 2 shots
(lm-eval's first_n sampler, meshlm's --fewshot-sampler first_n): prompts byte-equal, per-request log-likelihoods
within 1e-5 + 1e-7 relative (lm-eval's float32 sums), accuracies equal; for triviaqa, the same greedy generations
and exact matches, and its exact match equal to lm-eval's on answers written to test it."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.convert import import_gpt2
from meshlm.experiments.evaluation import harness, metrics
from meshlm.experiments.evaluation.prompts import render
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks import standard
from meshlm.training.run_dir import load_run
from tests.experiments.convert import hf_dirs
from tests.experiments.evaluation import lm_eval_models
from tests.experiments.evaluation import standard_fixtures as fx

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SHOTS = (0, 2)
# lm-eval reports acc alone for these, and triviaqa's exact_match after its remove_whitespace filter.
METRICS = {name: ("acc",) for name in ("winogrande", "race", "storycloze_2016", "storycloze_2018")}
METRICS["triviaqa"] = ("exact_match",)
FILTERS = {"triviaqa": "remove_whitespace"}
CHOICE_TASKS = [name for name in fx.TASKS if standard.SPECS[name].kind == "multiple_choice"]


def _yaml(name: str, data: Path) -> str:
    import lm_eval

    _, _, suffix, upstream, evaluated = fx.TASKS[name]
    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    splits = {"training_split": "train", "validation_split": None, "test_split": None, f"{evaluated}_split": evaluated}
    lines = [
        f"include: {tasks_dir / upstream}",
        f"task: parity_{name}",
        "tag: []",
        f"dataset_path: {'parquet' if suffix == 'parquet' else 'json'}",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    train: {data / f'{name}_train.{suffix}'}",
        f"    {evaluated}: {data / f'{name}.{suffix}'}",
        *(f"{key}: {'null' if value is None else value}" for key, value in splits.items()),
        "fewshot_config:",
        "  sampler: first_n",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch
    import transformers

    root = tmp_path_factory.mktemp("standard")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("HF_HOME", str(root / "hf_home"))):
        os.environ[name] = value
    # n_ctx: RACE's two-shot prompts (three articles) run to ~600 tokens.
    hf_dirs.save_random_torch_gpt2(root / "hf", torch, transformers, vocab=300, n_ctx=1024)
    import_gpt2.convert(root / "hf", root / "run")
    data, yamls = root / "data", root / "tasks"
    data.mkdir()
    yamls.mkdir()
    for name, (rows, train, suffix, _, _) in fx.TASKS.items():
        fx.write(rows, data / f"{name}.{suffix}")
        fx.write(train, data / f"{name}_train.{suffix}")
        (yamls / f"{name}.yaml").write_text(_yaml(name, data))
    return root


def _spec(setup: Path, name: str) -> str:
    suffix = fx.TASKS[name][2]
    return f"{name}:{setup / 'data' / f'{name}.{suffix}'}:{setup / 'data' / f'{name}_train.{suffix}'}"


@pytest.fixture(scope="module")
def manager(setup):
    """Our parity_NAME tasks alone: each includes its lm-eval YAML by path, so lm-eval's index of its own tasks (7 s
    to build) is left out."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(setup / "tasks"), include_defaults=False)


@pytest.fixture(scope="module")
def lm_eval_results(setup, manager):
    """{K: lm-eval's results with samples}, its hf model reading our EOS first (as meshlm eval does)."""
    import lm_eval

    model = lm_eval_models.eos_first_hflm(setup / "hf")
    return {
        k: lm_eval.simple_evaluate(
            model=model,
            tasks=[f"parity_{name}" for name in fx.TASKS],
            num_fewshot=k,
            log_samples=True,
            task_manager=manager,
        )
        for k in SHOTS
    }


def _samples(results: dict, name: str) -> list[dict]:
    return sorted(results["samples"][f"parity_{name}"], key=lambda s: s["doc_id"])


def _lm_eval_pairs(sample: dict) -> list[tuple[str, str]]:
    return [tuple(args) for args in sample["arguments"]]


def _meshlm_pairs(task, item, shots) -> list[tuple[str, str]]:
    """meshlm's (context, continuation) strings, as harness.fitted_prompts renders them."""
    d = task.fmt.target_delimiter
    if item.partial:
        return [(render(task.fmt, shots, _with_context(item, c)), d + item.target) for c in item.choices]
    return [(render(task.fmt, shots, item), d + c) for c in item.choices]


def _with_context(item, context):
    import dataclasses

    return dataclasses.replace(item, context=context)


@pytest.mark.parametrize("k", SHOTS)
@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_prompts_and_loglikelihoods_equal_lm_eval(setup, lm_eval_results, name, k):
    task = standard.build(name, _spec(setup, name).partition(":")[2])
    samples = _samples(lm_eval_results[k], name)
    assert len(samples) == len(task.items)
    shots = harness.shots_for(task, task.items, k, seed=0, sampler="first_n")
    for sample, item, item_shots in zip(samples, task.items, shots):
        assert _meshlm_pairs(task, item, item_shots) == _lm_eval_pairs(sample)
    run = load_run(setup / "run")
    lm = LanguageModel(run.model, run.tokenizer, batch_size=8)
    fitted = harness.fitted_prompts(lm, task, task.items, shots)
    ours = [
        s.logprob
        for s in lm.loglikelihood_tokens([(f.context_ids, c) for fs in fitted for f in fs for c in f.continuation_ids])
    ]
    theirs = [r[0][0] for s in samples for r in s["resps"]]
    # lm-eval returns float32 sums: on these 23-653 nat sums its own rounding is up to 3e-5, hence the rtol.
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-7)


def test_meshlm_eval_accuracies_equal_lm_eval(setup, lm_eval_results, tmp_path):
    specs = ",".join(_spec(setup, name) for name in fx.TASKS)
    args = ["eval", "--run-dir", str(setup / "run"), "--tasks", specs, "--shots", ",".join(map(str, SHOTS))]
    assert main(args + ["--fewshot-sampler", "first_n", "--out", str(tmp_path), "--no-progress"]) == 0
    (model,) = json.loads((tmp_path / "results.json").read_text())["models"]
    for name in fx.TASKS:
        for k in SHOTS:
            ours = model["results"][name]["shots"][str(k)]["metrics"]
            theirs = lm_eval_results[k]["results"][f"parity_{name}"]
            for metric in METRICS.get(name, ("acc", "acc_norm")):
                key = f"{metric},{FILTERS.get(name, 'none')}"
                assert ours[metric]["mean"] == pytest.approx(theirs[key], abs=1e-12), (name, k, metric)


@pytest.mark.parametrize("k", SHOTS)
def test_triviaqa_prompts_and_generations_equal_lm_eval(setup, lm_eval_results, k):
    task = standard.build("triviaqa", _spec(setup, "triviaqa").partition(":")[2])
    samples = _samples(lm_eval_results[k], "triviaqa")
    assert len(samples) == len(task.items)
    shots = harness.shots_for(task, task.items, k, seed=0, sampler="first_n")
    for sample, item, item_shots in zip(samples, task.items, shots):
        ((context, generation_kwargs),) = _lm_eval_pairs(sample)
        assert render(task.fmt, item_shots, item) == context
        assert task.until == tuple(generation_kwargs["until"])
    run = load_run(setup / "run")
    lm = LanguageModel(run.model, run.tokenizer, batch_size=8)
    settings = harness.EvalSettings(shots=(k,), sampler="first_n", log_samples=True)
    ours = harness.run_task(lm, task, settings)["samples"]
    assert [s["generated"] for s in ours] == [s["resps"][0][0] for s in samples]
    assert [s["metrics"]["exact_match"] for s in ours] == [s["exact_match"] for s in samples]


def test_triviaqa_exact_match_is_lm_evals(setup, manager):
    """Generations written around each item's aliases (case, punctuation, spaces, articles), scored by meshlm and
    by lm-eval's triviaqa (its remove_whitespace filter, then its process_results)."""
    from lm_eval.filters import get_filter

    lm_eval_task = manager.load("parity_triviaqa")["tasks"]["parity_triviaqa"]
    strip = get_filter("remove_whitespace")()
    task = standard.build("triviaqa", _spec(setup, "triviaqa").partition(":")[2])
    scores = []
    for doc, item in zip(lm_eval_task.validation_docs(), task.items):
        for alias in item.aliases:
            for generated in (alias, f" {alias.upper()}.", f"The {alias}", alias.replace(" ", "  "), f"{alias}!?", ""):
                ((filtered,),) = strip.apply([[generated]], [doc])
                theirs = lm_eval_task.process_results(doc, [filtered])["exact_match"]
                ours = metrics.exact_match_aliases(generated, item.aliases)
                assert ours == theirs, (generated, item.aliases)
                scores.append(ours)
    assert 0.0 in scores and 1.0 in scores
