"""lm-eval with --model meshlm on local tasks (YAML + JSONL, no hub), against lm-eval's own `hf` model on the same
converted weights: per-request log-likelihoods to 1e-4, the same acc and acc_norm, the same rolling
log-likelihoods and the same greedy generations; and meshlm eval's acc, acc_norm and acc_mutual_info equal lm-eval's
at 0 and 4 shots, with byte-equal prompts and per-request log-likelihoods (the unconditional ones included)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.convert import import_gpt2
from meshlm.experiments.evaluation import harness, tasks
from meshlm.experiments.evaluation.prompts import render
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.training.run_dir import load_run
from tests.experiments.convert import hf_dirs
from tests.experiments.evaluation import lm_eval_models

pytestmark = [pytest.mark.torch, pytest.mark.slow]

WORDS = "the king queen said hello world to be or not question answer".split()


def _mc_rows(n: int = 10, seed: int = 3, prefix: str = "", words: int = 6, choice_words: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        context = " ".join(rng.choice(WORDS, size=words)) + "? Answer:"
        choices = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, choice_words + 1)))) for _ in range(3)]
        rows.append({"id": f"{prefix}{i}", "context": context, "choices": choices, "gold": int(rng.integers(0, 3))})
    return rows


TASKS = {
    "mc": """task: meshlm_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{prefix}{{{{context}}}}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "mc_shots": """task: meshlm_test_mc_shots
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/mc_short.jsonl
    train: {data}/mc_train.jsonl
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_mutual_info
""",
    "rolling": """task: meshlm_test_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/rolling.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
""",
    "gen": """task: meshlm_test_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/mc.jsonl
test_split: test
output_type: generate_until
doc_to_text: context
doc_to_target: id
generation_kwargs:
  until: ["?"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch
    import transformers

    root = tmp_path_factory.mktemp("lm_eval")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("HF_HOME", str(root / "hf_home"))):
        os.environ[name] = value
    hf_dirs.save_random_torch_gpt2(root / "hf", torch, transformers, vocab=300, n_ctx=64)
    import_gpt2.convert(root / "hf", root / "run")
    (root / "data").mkdir()
    (root / "data" / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _mc_rows()))
    # Short rows: four shots and a query fit n_ctx=64 (lm-eval would cut tokens where meshlm drops whole shots).
    short, shots = (_mc_rows(n, seed, p, words=1, choice_words=1) for n, seed, p in ((10, 5, ""), (6, 4, "train")))
    (root / "data" / "mc_short.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    (root / "data" / "mc_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shots))
    both = short + [r | {"split": "train"} for r in shots]  # meshlm's JSONL: one file, shots marked
    (root / "data" / "mc_with_shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in both))
    texts = [" ".join(np.random.default_rng(i).choice(WORDS, size=40 + 30 * i)) for i in range(3)]  # 1-3 windows
    (root / "data" / "rolling.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for prefix_name, prefix in (("plain", ""), ("eos", "<|endoftext|>")):
        (root / prefix_name).mkdir()
        for kind, yaml in TASKS.items():
            (root / prefix_name / f"{kind}.yaml").write_text(yaml.format(data=root / "data", prefix=prefix))
    return root


def _lm_eval(root, model: str, model_args: str, tasks: list[str], include: str) -> dict:
    import lm_eval

    from meshlm.experiments.evaluation import lm_eval_adapter  # noqa: F401  (registers --model meshlm)

    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        batch_size=4,
        device="cpu",
        log_samples=True,
        task_manager=lm_eval.tasks.TaskManager(include_path=str(root / include), include_defaults=False),
    )


def _per_request(results: dict, task: str) -> list:
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [r for s in samples for r in s["resps"]]


def test_meshlm_model_type_matches_hf(setup):
    """--model meshlm with eos_prefix=false reads the bare context, as lm-eval's hf model does for GPT-2."""
    tasks = ["meshlm_test_mc", "meshlm_test_rolling", "meshlm_test_gen"]
    ours = _lm_eval(setup, "meshlm", f"run_dir={setup / 'run'},eos_prefix=false", tasks, "plain")
    theirs = _lm_eval(setup, "hf", f"pretrained={setup / 'hf'},dtype=float32", tasks, "plain")
    for task in ("meshlm_test_mc", "meshlm_test_rolling"):
        a, b = _per_request(ours, task), _per_request(theirs, task)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(_logprobs(a), _logprobs(b), atol=1e-4, rtol=0)
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["meshlm_test_mc"][metric] == theirs["results"]["meshlm_test_mc"][metric]
    assert _per_request(ours, "meshlm_test_gen") == _per_request(theirs, "meshlm_test_gen")


def test_meshlm_eval_scores_as_lm_eval_does(setup, tmp_path):
    """meshlm eval starts every context with EOS (as training does); so do lm-eval tasks whose text begins with
    <|endoftext|>: zero-shot acc and acc_norm agree, and so do the per-request log-likelihoods."""
    task = f"jsonl:{setup / 'data' / 'mc.jsonl'}"
    args = ["eval", "--run-dir", str(setup / "run"), "--tasks", task, "--shots", "0", "--out", str(tmp_path)]
    assert main(args + ["--no-progress"]) == 0
    (result,) = json.loads((tmp_path / "results.json").read_text())["models"][0]["results"].values()
    metrics = {name: value["mean"] for name, value in result["shots"]["0"]["metrics"].items()}
    theirs = _lm_eval(setup, "hf", f"pretrained={setup / 'hf'},dtype=float32", ["meshlm_test_mc"], "eos")
    adapter = _lm_eval(setup, "meshlm", f"run_dir={setup / 'run'}", ["meshlm_test_mc"], "plain")
    for metric in ("acc", "acc_norm"):
        assert metrics[metric] == pytest.approx(theirs["results"]["meshlm_test_mc"][f"{metric},none"], abs=1e-12)
    np.testing.assert_allclose(
        _logprobs(_per_request(adapter, "meshlm_test_mc")),
        _logprobs(_per_request(theirs, "meshlm_test_mc")),
        atol=1e-4,
        rtol=0,
    )


@pytest.mark.parametrize("k", [0, 4])
def test_meshlm_eval_with_shots_and_mutual_info_scores_as_lm_eval_does(setup, tmp_path, k):
    """lm-eval's first_n shots from its train split; meshlm's JSONL marks the same rows "split": "train" and takes
    them with --fewshot-sampler first_n. acc_mutual_info's unconditional requests are lm-eval's ("", " choice"),
    which both read as EOS then the choice."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    theirs = lm_eval.simple_evaluate(
        model=lm_eval_models.eos_first_hflm(setup / "hf"),
        tasks=["meshlm_test_mc_shots"],
        num_fewshot=k,
        log_samples=True,
        task_manager=TaskManager(include_path=str(setup / "plain"), include_defaults=False),
    )
    samples = sorted(theirs["samples"]["meshlm_test_mc_shots"], key=lambda s: s["doc_id"])
    spec = f"jsonl:{setup / 'data' / 'mc_with_shots.jsonl'}"
    args = ["eval", "--run-dir", str(setup / "run"), "--tasks", spec, "--shots", str(k), "--out", str(tmp_path)]
    assert main(args + ["--fewshot-sampler", "first_n", "--no-progress"]) == 0
    (result,) = json.loads((tmp_path / "results.json").read_text())["models"][0]["results"].values()
    assert result["shots"][str(k)]["shots_dropped"] == 0 and result["shots"][str(k)]["prompt_cut"] == 0
    for metric in ("acc", "acc_norm", "acc_mutual_info"):
        ours = result["shots"][str(k)]["metrics"][metric]["mean"]
        assert ours == pytest.approx(theirs["results"]["meshlm_test_mc_shots"][f"{metric},none"], abs=1e-12), metric

    task = tasks.resolve(spec)
    shots = harness.shots_for(task, task.items, k, seed=0, sampler="first_n")
    n = len(task.items[0].choices)
    for sample, item, item_shots in zip(samples, task.items, shots, strict=True):
        context = render(task.fmt, item_shots, item)
        assert [tuple(a) for a in sample["arguments"]] == [(context, " " + c) for c in item.choices] + [
            ("", " " + c) for c in item.choices
        ]
    run = load_run(setup / "run")
    lm = LanguageModel(run.model, run.tokenizer, batch_size=8)
    fitted = [f for fs in harness.fitted_prompts(lm, task, task.items, shots) for f in fs]
    conditional = [
        s.logprob for s in lm.loglikelihood_tokens([(f.context_ids, c) for f in fitted for c in f.continuation_ids])
    ]
    prior = [lp for u in harness._unconditional(lm, task, task.items) for lp in u["prior"]]
    np.testing.assert_allclose(conditional, [r[0][0] for s in samples for r in s["resps"][:n]], atol=1e-5, rtol=1e-7)
    np.testing.assert_allclose(prior, [r[0][0] for s in samples for r in s["resps"][n:]], atol=1e-5, rtol=1e-7)


def _logprobs(resps: list) -> np.ndarray:
    """A response is [(logprob, is_greedy)] for loglikelihood and [logprob] for rolling requests."""
    return np.array([r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in resps], np.float64)


def test_meshlm_lm_eval_command_runs_lm_eval_with_the_model_type(setup, capsys):
    args = ["--model", "meshlm", "--model_args", f"run_dir={setup / 'run'}", "--tasks", "meshlm_test_mc"]
    assert main(["lm-eval", *args, "--include_path", str(setup / "plain"), "--limit", "4"]) == 0
    table = capsys.readouterr().out
    assert "meshlm_test_mc" in table and "acc_norm" in table


def test_bare_lm_eval_command_knows_the_meshlm_model_type(setup):
    """lm-eval's own console script, in a fresh interpreter: meshlm-lm-eval.pth (installed with meshlm) registers
    the model type, with nothing imported by hand."""
    lm_eval = Path(sys.executable).with_name("lm_eval")
    args = ["--model", "meshlm", "--model_args", f"run_dir={setup / 'run'}", "--tasks", "meshlm_test_mc"]
    argv = [str(lm_eval), *args, "--include_path", str(setup / "plain"), "--limit", "4"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "meshlm_test_mc" in proc.stdout and "acc_norm" in proc.stdout
