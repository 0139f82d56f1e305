"""End to end: the trainer on a small text corpus, exact resume, hooks, samples (kill -9: test_kill_anywhere)."""

import dataclasses
import functools
import json
import math
import types

import jax
import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training import recipe
from meshlm.training import trainer as trainer_lib
from meshlm.training.trainer import Trainer, train
from tests.experiments.evaluation import standard_fixtures as fx
from tests.training.helpers import overrides_of, quiet, small_config, text_corpus, tick_train_calls


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


def test_exact_resume_is_bitwise_identical(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path, steps=8, **{"model.dropout": 0.1})
    straight = train(cfg, tmp_path / "straight", progress=False, log=quiet)
    first = train(cfg, tmp_path / "resumed", progress=False, stop_after=4, log=quiet)
    assert first.final_step == 4
    resumed = train(cfg, tmp_path / "resumed", progress=False, log=quiet)
    assert resumed.final_step == 8
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    losses = lambda d: [(m["step"], m["loss"]) for m in metrics_lib.read(d)]
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_several_steps_per_call_train_bitwise_as_one_step_per_call_and_resume_exactly(corpus, tmp_path, users_compiler):
    """Calls of up to 3 steps, cut short wherever a log (every 4), a hook (every 6) or a checkpoint is due: the same
    records, hook states, checkpoints and final state as one step per call, also across a stop at step 5."""
    every = {"train.log_every": 4, "train.checkpoint_every": 4, "train.eval_every": 100, "model.dropout": 0.1}
    runs, stacked = {}, []
    for name, per_call, stops in (("one", 1, [None]), ("three", 3, [None]), ("resumed", 3, [5, None])):
        cfg = small_config(corpus, tmp_path, steps=12, **every, **{"train.steps_per_call": per_call})
        hooked = []
        for stop in stops:
            trainer = Trainer(cfg, tmp_path / name, log=quiet)
            trainer.add_hook(6, lambda step, state, seen=hooked: seen.append((step, int(state.step), _sum(state))))
            if name == "three":
                trainer.setup = _counting_calls(trainer.setup, stacked)
            result = trainer.run(stop_after=stop, progress=False)
        per_start = metrics_lib.PER_START
        records = [{k: v for k, v in r.items() if k not in per_start} for r in metrics_lib.read(tmp_path / name)]
        checkpoints = sorted(int(p.name) for p in (tmp_path / name / "checkpoints").iterdir())
        runs[name] = (jax.tree.leaves(result.state), records, hooked, checkpoints)
    assert stacked == [3, 2, 2, 3]  # steps 1-3, (4 alone), 5-6, 7-8, 9-11, (12 alone)
    one = runs["one"]
    assert [r["step"] for r in one[1]] == [4, 8, 12] and [h[:2] for h in one[2]] == [(6, 6), (12, 12)]
    assert runs["three"][1:] == one[1:]
    # The stop logs and saves step 5 as well; every record and hook the resumed run shares with the others agrees.
    assert [r for r in runs["resumed"][1] if r["step"] != 5] == one[1] and runs["resumed"][2] == one[2]
    for name in ("three", "resumed"):
        for a, b in zip(one[0], runs[name][0]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_each_record_times_the_steps_since_the_last_one_compiling_calls_standing_for_themselves(
    corpus, tmp_path, monkeypatch
):
    """A clock that moves only inside train calls, 10 s a step: every record reads 10 s a step. The record of step 4
    follows only compiling calls (the first of 3 steps and of 1 step), so it times its own call."""
    clock = [0.0]
    monkeypatch.setattr(trainer_lib, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    every = {"train.log_every": 4, "train.checkpoint_every": 4, "train.steps_per_call": 3}
    trainer = Trainer(small_config(corpus, tmp_path, steps=12, **every), tmp_path / "run", log=quiet)

    tick_train_calls(trainer, clock)
    trainer.run(progress=False)
    records = metrics_lib.read(tmp_path / "run")
    assert [r["step"] for r in records] == [4, 8, 12]
    assert all(r["step_time"] == 10.0 and r["tokens_per_s"] == 4 * 32 / 10.0 for r in records)


def test_hook_time_is_left_out_of_the_records_but_the_steps_around_it_are_not(corpus, tmp_path, monkeypatch):
    """Hooks every 6 steps, records every 4: each hook takes 100 s on the clock, every step 10 s. Every record reads
    10 s a step, the record of step 8 included, whose window holds steps 5 and 6 before the hook and 7, 8 after."""
    clock = [0.0]
    monkeypatch.setattr(trainer_lib, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    every = {"train.log_every": 4, "train.checkpoint_every": 12, "train.eval_every": 12}
    trainer = Trainer(small_config(corpus, tmp_path, steps=12, **every), tmp_path / "run", log=quiet)

    def slow_hook(step, state):
        clock[0] += 100.0
        return {}

    tick_train_calls(trainer, clock)
    trainer.add_hook(6, slow_hook)
    trainer.run(progress=False)
    records = metrics_lib.read(tmp_path / "run")
    assert [r["step"] for r in records] == [4, 8, 12]
    assert [r["step_time"] for r in records] == [10.0, 10.0, 10.0]


def _sum(state) -> float:
    return float(state.params["embed"].sum())


def _counting_calls(setup, lengths: list):
    @functools.wraps(setup.train_steps)
    def train_steps(state, batches):
        lengths.append(batches["inputs"].shape[0])
        return setup.train_steps(state, batches)

    return dataclasses.replace(setup, train_steps=train_steps)


def test_run_directory_layout_and_falling_validation_loss(corpus, tmp_path, capsys):
    cfg = small_config(corpus, tmp_path, steps=24, **{"train.eval_every": 8, "train.optimizer.peak_lr": 3e-3})
    run = tmp_path / "run"
    train(cfg, run, progress=False, log=quiet)
    assert config_lib.load(run / "config.json") == cfg
    # Samples are the command line's job (meshlm train --sample), not the generic trainer's.
    assert (run / "tokenizer.model").exists() and not (run / "samples.txt").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [20, 22, 24]  # keep_checkpoints=3
    records = metrics_lib.read(run)
    assert [r["step"] for r in records] == list(range(2, 25, 2))
    assert {"loss", "grad_norm", "lr", "tokens_per_s", "mfu"} <= set(records[0])
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 3 and val[-1] < val[0]
    assert (
        main(["generate", "--run-dir", str(run), "--prompt", "the king", "--max-new-tokens", "5", "--temperature", "0"])
        == 0
    )
    assert "the king" in capsys.readouterr().out


def test_a_different_config_on_an_existing_run_is_refused(corpus, tmp_path):
    train(small_config(corpus, tmp_path, steps=2), tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(ValueError, match="different config.*sections differing: model"):
        train(
            small_config(corpus, tmp_path, steps=2, **{"model.d_model": 64}),
            tmp_path / "run",
            progress=False,
            log=quiet,
        )


def test_train_command_samples_its_prompts_after_training(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--run-dir", str(run), "--no-progress", "--sample", "the king"]
    argv += [arg for item in overrides_of(small_config(corpus, tmp_path, steps=2)) for arg in ("--set", item)]
    assert main(argv + ["--sample", "a lady"]) == 0
    samples = (run / "samples.txt").read_text()
    assert samples.count("--- sample") == 2 and "\nthe king" in samples and "\na lady" in samples


def test_hooks_run_every_n_steps_and_at_the_end_and_their_metrics_are_logged(corpus, tmp_path):
    calls = []

    def hook(step, state):
        calls.append((step, int(state.step)))
        return {"probe": float(step) * 2}

    cfg = small_config(corpus, tmp_path, steps=7)
    train(cfg, tmp_path / "run", progress=False, log=quiet, hooks=((3, hook),))
    assert calls == [(3, 3), (6, 6), (7, 7)]  # the state a hook sees has taken exactly `step` steps
    probes = {r["step"]: r["probe"] for r in metrics_lib.read(tmp_path / "run") if "probe" in r}
    assert probes == {3: 6.0, 6: 12.0, 7: 14.0}


def test_a_batch_ramp_follows_the_step_plan_and_resumes_exactly(corpus, tmp_path):
    ramp = {"train.batch_size": 8, "train.ramp_batch": 2, "train.ramp_tokens": 6 * 32 * 2, "train.eval_every": 100}
    # GPT-3's token clock: warm-up over the first 256 tokens, cosine to 10 % of the peak at 1,024 tokens.
    clock = {"train.optimizer.warmup_steps": 0, "train.optimizer.warmup_tokens": 256}
    clock |= {"train.optimizer.decay_tokens": 1024, "train.optimizer.peak_lr": 1e-3}
    cfg = small_config(corpus, tmp_path, steps=8, **ramp, **clock)
    plan = recipe.step_plan(cfg.train, cfg.seq_len)
    # Megatron-LM's rule by hand: 1 + floor(tokens before the step / (384 / 3)) chunks of 2 sequences x 32 tokens.
    batches = [2, 2, 4, 6, 8, 8, 8, 8]
    assert [plan.batch_size_at(s) for s in range(8)] == batches
    straight = train(cfg, tmp_path / "straight", progress=False, log=quiet)
    train(cfg, tmp_path / "resumed", progress=False, log=quiet, stop_after=3)  # stops inside the ramp
    resumed = train(cfg, tmp_path / "resumed", progress=False, log=quiet)
    records = metrics_lib.read(tmp_path / "straight")
    assert [(r["step"], r["batch_size"]) for r in records] == [(2, 2), (4, 6), (6, 8), (8, 8)]
    assert [r["tokens_seen"] for r in records] == [plan.tokens_at(r["step"]) for r in records]
    # The logged LR is the one of the step's update, read on the token clock at the tokens seen before the step.
    before = np.cumsum([0] + batches) * 32
    for r in records:
        t = min(before[r["step"] - 1], 1024)  # the floor after the decay's end (step 8 starts at 1,216 tokens)
        cosine = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * (t - 256) / (1024 - 256)))
        assert r["lr"] == pytest.approx(1e-3 * t / 256 if t < 256 else cosine, rel=1e-6), r["step"]
    # The tokens the step counted (non-padding targets) never exceed the sequences the plan gave it.
    assert all(0 < r["tokens"] <= r["batch_size"] * 32 for r in records)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_command_evaluates_few_shot_tasks_during_training(corpus, tmp_path):
    """A built-in task and a standard benchmark from a file in its upstream schema (ARC), on the training mesh,
    each equal to `meshlm eval` of the saved run."""
    arc = tmp_path / "arc.jsonl"
    fx.write(fx.ARC, arc)
    tasks = f"label_mapping,arc_easy:{arc}"
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--run-dir", str(run), "--no-progress"]
    argv += ["--eval-tasks", tasks, "--eval-every", "2", "--eval-shots", "0,2", "--eval-limit", "4"]
    argv += [arg for item in overrides_of(small_config(corpus, tmp_path, steps=4)) for arg in ("--set", item)]
    assert main(argv) == 0
    evals = {r["step"]: r for r in metrics_lib.read(run) if any(k.startswith("eval/") for k in r)}
    assert sorted(evals) == [2, 4]
    for record in evals.values():
        for task in ("label_mapping", "arc_easy"):
            accs = {k: v for k, v in record.items() if k.startswith(f"eval/{task}/acc@")}
            assert set(accs) == {f"eval/{task}/acc@0", f"eval/{task}/acc@2"}
    # The hook at the last step scored the state the run saved: `meshlm eval` of the saved run, through the
    # checkpoint and its own model, gets the same accuracies.
    assert (
        main(
            ["eval", "--run-dir", str(run), "--tasks", tasks, "--shots", "0,2", "--limit", "4"]
            + ["--out", str(tmp_path / "eval"), "--no-progress"]
        )
        == 0
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]["results"]
    for task in ("label_mapping", "arc_easy"):
        for k in (0, 2):
            for metric in ("acc", "acc_norm"):
                logged = evals[4][f"eval/{task}/{metric}@{k}"]
                assert logged == results[task]["shots"][str(k)]["metrics"][metric]["mean"], (task, k, metric)
