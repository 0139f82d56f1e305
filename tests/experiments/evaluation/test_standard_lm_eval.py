"""hellaswag, arc_easy, arc_challenge, piqa and winogrande read from files in their upstream schemas, scored by
`meshlm eval` and by lm-eval's own task definitions (its YAML and utils.py, pointed at the same files) with its
`hf` model on the same converted random GPT-2, at 0 and 2 shots (lm-eval's first_n sampler, meshlm's
--fewshot-sampler first_n): prompts byte-equal, per-request log-likelihoods within 1e-5 + 1e-7 relative
(lm-eval's float32 sums), accuracies equal."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.convert import import_gpt2
from meshlm.experiments.evaluation import harness
from meshlm.experiments.evaluation.prompts import render
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks import standard
from meshlm.training.run_dir import load_run
from tests.experiments.convert import hf_dirs
from tests.experiments.evaluation import standard_fixtures as fx

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SHOTS = (0, 2)
METRICS = {"winogrande": ("acc",)}  # lm-eval reports acc alone for winogrande


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
    hf_dirs.save_random_torch_gpt2(root / "hf", torch, transformers, vocab=300, n_ctx=512)
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
def lm_eval_results(setup):
    """{K: lm-eval's results with samples}, its hf model reading our EOS first (as meshlm eval does)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    class EosFirstHFLM(HFLM):
        def tok_encode(self, string, *args, **kwargs):
            return [self.eot_token_id] + super().tok_encode(string, *args, **kwargs)

    model = EosFirstHFLM(pretrained=str(setup / "hf"), dtype="float32", batch_size=8, device="cpu")
    manager = TaskManager(include_path=str(setup / "tasks"))
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
@pytest.mark.parametrize("name", list(fx.TASKS))
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
    # lm-eval returns float32 sums: on these 60-630 nat sums its own rounding is up to 3e-5, hence the rtol.
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
                assert ours[metric]["mean"] == pytest.approx(theirs[f"{metric},none"], abs=1e-12), (name, k, metric)
