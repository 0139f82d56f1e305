import json
import random
import re

import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.cli import main
from meshlm.experiments.evaluation import harness
from meshlm.experiments.evaluation.prompts import Item, draw_shots, fit
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.training import config as config_lib
from meshlm.training.trainer import train
from tests.experiments.evaluation.helpers import PieceTokenizer, tiny_model


def _toy_task(kind="multiple_choice"):
    items = tuple(
        Item(id=str(i), context=f"{i} + 1 =", choices=(str(i + 1), str(i + 2)), gold=i % 2)
        if kind == "multiple_choice"
        else Item(id=str(i), context=f"{i} + 1 =", target=str(i + 1))
        for i in range(12)
    )
    return Task(name=f"toy_{kind}", kind=kind, items=items, pool=items, fewshot_split="test", max_gen_tokens=3)


@pytest.mark.slow
def test_results_are_deterministic_and_seeds_change_the_shots(monkeypatch):
    model, tok = tiny_model(n_ctx=64), PieceTokenizer()
    tasks = [_toy_task(), _toy_task("generate")]
    prompted = []  # (query item, shot ids) of every prompt the harness fits, in order

    def spy_fit(tokenizer, fmt, shots, query, *args, **kwargs):
        prompted.append((query, tuple(s.id for s in shots)))
        return fit(tokenizer, fmt, shots, query, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", spy_fit)

    def run():
        prompted.clear()
        result = harness.evaluate(model, tok, tasks, shots=(0, 2), seeds=2, batch_size=8)
        return result, [(query, shots) for query, shots in prompted if shots]

    (first, shots_first), (again, shots_again) = run(), run()
    assert shots_first == shots_again  # the same seed draws the same shots
    assert first == again
    for task in tasks:
        for item in task.items:
            used = {shots for query, shots in shots_first if query == item}
            assert item.id not in {s for shots in used for s in shots}  # never its own shot
            # Seeds 0 and 1 give each item two different pairs of shots, the ones draw_shots gives for them.
            assert used == {tuple(s.id for s in draw_shots(task.pool, item, 2, seed, task.name)) for seed in (0, 1)}
            assert len(used) == 2
    mc = first["toy_multiple_choice"]["shots"]
    assert mc["0"]["seeds"] == 1 and mc["2"]["seeds"] == 2  # K=0 has no shots to vary
    assert set(mc["2"]["metrics"]) == {"acc", "acc_norm", "acc_per_token", "acc_uncond"}
    gen = first["toy_generate"]["shots"]["2"]["metrics"]
    assert set(gen) == {"acc", "exact_match", "perplexity"}
    flat = harness.flat_metrics(first)
    assert flat["eval/toy_multiple_choice/acc@2"] == mc["2"]["metrics"]["acc"]["mean"]


def test_the_trainer_hook_evaluates_the_state_params():
    model, tok = tiny_model(n_ctx=64), PieceTokenizer()
    graphdef, params = nnx.split(model)

    class State:
        pass

    state = State()
    state.params = nnx.to_pure_dict(params)
    hook = harness.make_hook(graphdef, tok, [_toy_task()], shots=(0,), batch_size=4)
    direct = harness.flat_metrics(harness.evaluate(model, tok, [_toy_task()], batch_size=4))
    assert hook(10, state) == direct


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = random.Random(0)
    words = "the king queen lord lady sword crown night day love death fair foul heart blood".split()
    (root / "corpus").mkdir()
    for i in range(20):
        lines = [" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(8)]
        (root / "corpus" / f"play{i:02d}.txt").write_text("\n".join(lines) + "\n")
    overrides = [
        f"data.source=text:{root}/corpus/*.txt",
        "data.vocab_size=300",
        f"data.cache_dir={root / 'cache'}",
        "model.vocab_size=384",
        "model.n_ctx=64",
        "train.seq_len=64",
        "model.n_layers=2",
        "model.d_model=32",
        "model.n_heads=4",
        "train.steps=2",
        "train.batch_size=4",
        "train.eval_every=2",
        "train.eval_batches=1",
        "train.checkpoint_every=2",
        "train.optimizer.warmup_steps=1",
    ]
    train(config_lib.from_preset("tiny", overrides), root / "run", progress=False, log=lambda *_: None)
    return root / "run"


@pytest.mark.slow
def test_a_user_jsonl_task_runs_and_does_not_depend_on_batch_size(trained_run, tmp_path):
    rows = [
        {"context": f"The {w} said", "choices": ["yes", "no", "the king"], "gold": i % 3}
        for i, w in enumerate(["king", "queen", "lord", "lady", "knight", "fool", "night", "day"])
    ]
    rows += [{"context": "The crown is", "choices": ["fair", "foul"], "gold": 0, "split": "train", "id": "t1"}]
    rows += [{"context": "The sword is", "choices": ["fair", "foul"], "gold": 1, "split": "train", "id": "t2"}]
    path = tmp_path / "user.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    for batch_size in ("1", "7"):
        out = tmp_path / f"out{batch_size}"
        argv = ["eval", "--run-dir", str(trained_run), "--tasks", f"jsonl:{path}", "--shots", "0,2", "--seeds", "2"]
        assert main(argv + ["--batch-size", batch_size, "--out", str(out), "--no-progress"]) == 0
        results.append(json.loads((out / "results.json").read_text()))
        assert (out / "icl_user.png").stat().st_size > 0 and "## user (acc, 8 items)" in (
            out / "results.md"
        ).read_text()
    a, b = (r["models"][0]["results"]["user"]["shots"] for r in results)
    for k in ("0", "2"):
        for metric in a[k]["metrics"]:
            np.testing.assert_allclose(
                a[k]["metrics"][metric]["per_seed"], b[k]["metrics"][metric]["per_seed"], atol=1e-9
            )
    assert a["2"]["shots_mean"] == 2.0  # both shots come from the train split


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["eval", "--run-dir", str(tmp_path), "--tasks", "arithmetic_2da", "--out", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["eval", "--run-dir", str(tmp_path), "--tasks", "x", "--shots", "a", "--out", str(tmp_path)]) == 2
    assert "--shots 'a'" in capsys.readouterr().err


@pytest.mark.slow
def test_dry_run_then_a_run_with_samples_then_a_rerun_from_the_cache(trained_run, tmp_path, capsys):
    rows = [
        {"context": f"Question: is the {w} fair?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2}
        for i, w in enumerate(["king", "queen", "lord", "lady", "knight", "fool"])
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["eval", "--run-dir", str(trained_run), "--tasks", f"jsonl:{path}", "--shots", "0,2", "--formats", "3"]
    argv += ["--out", str(out), "--no-progress"]
    assert main(argv + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    requests = int(dry.split("qa: ")[1].split(" requests")[0].replace(",", ""))
    assert not out.exists()  # a dry run writes nothing

    assert main(argv + ["--log-samples"]) == 0
    found, scored = re.search(r"([\d,]+) found, ([\d,]+) scored", capsys.readouterr().err).groups()
    # The dry run counted every request; those repeated within the run (formats that coincide at K=0, the
    # unconditional requests every item shares) are found in the cache the second time.
    assert int(found) + int(scored) == requests and int(found) > 0
    samples = [json.loads(line) for line in (out / "samples" / "run" / "qa.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 2 * len(rows)  # formats x K x items
    results = json.loads((out / "results.json").read_text())["models"][0]["results"]["qa"]
    assert "samples" not in results
    for s in samples:
        assert s["task"] == "qa" and s["prediction"] == int(np.argmax(s["logprobs"]))
        assert s["metrics"]["acc"] == float(s["prediction"] == s["gold"])
    own = [s for s in samples if s["format"] == 0 and s["k"] == 0]
    assert [s["prompt"] for s in own] == [r["context"] for r in rows]
    assert np.mean([s["metrics"]["acc"] for s in own]) == results["shots"]["0"]["metrics"]["acc"]["mean"]

    assert main(argv) == 0
    assert f"{requests:,} found, 0 scored" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["models"][0]["results"]["qa"] == results
