"""Damaged checkpoints and numerical faults: detected, reported in one line, nothing lost."""

import dataclasses
import functools
import hashlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meshlm.model.errors import ConfigError
from meshlm.training import metrics as metrics_lib
from meshlm.training.errors import NonFiniteError
from meshlm.training.run_dir import load_run
from meshlm.training.train_step import leaf_name
from meshlm.training.trainer import Trainer, train
from tests.training.helpers import quiet, small_config, text_corpus


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A straight 8-step run, and the same run stopped after step 6 (checkpoints 2, 4, 6)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "corpus").mkdir()
    cfg = small_config(text_corpus(root / "corpus"), root, steps=8, **{"model.n_layers": 1})
    train(cfg, root / "straight", progress=False, log=quiet)
    train(cfg, root / "stopped", progress=False, log=quiet, stop_after=6)
    return cfg, root


def _copy(runs, tmp_path):
    cfg, root = runs
    shutil.copytree(root / "stopped", tmp_path / "run")
    return cfg, tmp_path / "run"


def _array_files(run, step: int) -> list:
    return [p for p in (run / "checkpoints" / str(step) / "state").rglob("*") if p.is_file() and "/d/" in str(p)]


def _largest_array_file(run, step: int):
    return max(_array_files(run, step), key=lambda p: p.stat().st_size)


def _truncate(run, step):
    path = _largest_array_file(run, step)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(run, step):
    path = _largest_array_file(run, step)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def _garble_json(run, step):
    (run / "checkpoints" / str(step) / "data" / "metadata").write_text('{"processes": [')


def _tree_hashes(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _garble, _garble_json], ids=["truncated", "garbled", "garbled-json"])
def test_a_damaged_latest_checkpoint_is_reported_moved_aside_and_the_previous_one_used(runs, tmp_path, damage):
    cfg, run = _copy(runs, tmp_path)
    damage(run, 6)
    damaged = _tree_hashes(run / "checkpoints" / "6")
    lines = []
    result = train(cfg, run, progress=False, log=lines.append)
    report = [line for line in lines if line.startswith("checkpoint ")]
    assert len(report) == 1 and "checkpoint 6 " in report[0] and report[0].endswith("using step 4"), lines
    assert "resumed from step 4 " in " ".join(lines)
    # Nothing deleted: the damaged checkpoint is kept, byte for byte, where the report says.
    assert _tree_hashes(run / "corrupt_checkpoints" / "6") == damaged
    # The resumed run is the uninterrupted one, bit for bit.
    straight = load_run(runs[1] / "straight")
    assert result.final_step == 8
    for x, y in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_a_reader_falls_back_without_moving_anything_and_all_damaged_is_an_error(runs, tmp_path, capsys):
    cfg, run = _copy(runs, tmp_path)
    # A reader restores the parameters only: damage every array file, so that the parameters' file is among them.
    for path in _array_files(run, 6):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _tree_hashes(run)
    assert load_run(run).step == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint 6" in err and "using step 4" in err
    assert _tree_hashes(run) == before
    for step in (2, 4):
        _garble_json(run, step)
    with pytest.raises(ConfigError, match="no intact checkpoint .*tried steps 6, 4, 2"):
        train(cfg, run, progress=False, log=quiet)
    assert sorted(p.name for p in (run / "corrupt_checkpoints").iterdir()) == ["2", "4", "6"]  # moved, not deleted


def _poison_step(trainer: Trainer, at: int, poison):
    """Make the train step computing step `at` see poison(state, batch) instead of (state, batch)."""
    real = trainer.setup.train_step

    @functools.wraps(real)
    def step(state, batch):
        if int(state.step) == at - 1:
            state, batch = poison(state, batch)
        return real(state, batch)

    trainer.setup = dataclasses.replace(trainer.setup, train_step=step)


def _nan_first_param(state, batch):
    leaves, treedef = jax.tree.flatten(state.params)
    params = jax.tree.unflatten(treedef, [leaves[0] * jnp.nan] + leaves[1:])
    return dataclasses.replace(state, params=params), batch


def _out_of_range_target(state, batch):
    # A token id past the vocabulary (a corrupt shard, a wrong tokenizer): its cross-entropy is NaN.
    return state, {**batch, "targets": batch["targets"].at[0, 0].set(10**6)}


def test_a_nonfinite_gradient_stops_the_run_with_the_step_the_parameters_and_the_last_checkpoint(runs, tmp_path):
    cfg, root = runs
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    names = [leaf_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(trainer.state.params)]
    _poison_step(trainer, at=5, poison=_nan_first_param)
    with pytest.raises(NonFiniteError) as e:
        trainer.run(progress=False)
    message = str(e.value)
    assert "\n" not in message and message.startswith("step 5: loss nan")
    assert f"non-finite gradients in {len(names)} of {len(names)} parameters ({', '.join(names[:4])}, ...)" in message
    assert f"last good checkpoint: step 4 in {tmp_path / 'run' / 'checkpoints'}" in message
    assert "train.nonfinite=skip" in message
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [2, 4]


def test_a_nonfinite_loss_stops_the_run_even_when_the_gradients_are_finite(runs, tmp_path):
    trainer = Trainer(runs[0], tmp_path / "run", log=quiet)
    _poison_step(trainer, at=3, poison=_out_of_range_target)
    with pytest.raises(NonFiniteError, match=r"^step 3: loss nan, all gradients finite; last good checkpoint: step 2"):
        trainer.run(progress=False)


def test_skip_mode_applies_no_update_for_a_nonfinite_batch_and_counts_it(runs, tmp_path):
    cfg = dataclasses.replace(runs[0], train=dataclasses.replace(runs[0].train, nonfinite="skip", log_every=1))
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    _poison_step(trainer, at=3, poison=_out_of_range_target)
    seen = {}
    trainer.add_hook(1, lambda step, state: seen.update({step: jax.tree.map(np.array, state.params)}))
    result = trainer.run(progress=False)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(seen[3], seen[2]) and not same(seen[4], seen[3])  # step 3 changed nothing; step 4 trained
    records = {r["step"]: r for r in metrics_lib.read(tmp_path / "run")}
    assert [records[s]["nonfinite_skipped"] for s in range(1, 9)] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert np.isnan(records[3]["loss"]) and np.isfinite(records[8]["loss"]) and result.final_step == 8


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_nonfinite_step_inside_a_call_of_several_is_named_or_skipped(runs, tmp_path, mode):
    """Calls of 4 steps (logs and checkpoints every 4): a NaN loss at step 7, the third of its call, is reported as
    step 7 with the checkpoint of step 4, or skipped and counted once."""
    every = dict(steps_per_call=4, log_every=4, checkpoint_every=4, nonfinite=mode)
    cfg = dataclasses.replace(runs[0], train=dataclasses.replace(runs[0].train, **every))
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    real = trainer.setup.train_steps

    @functools.wraps(real)
    def train_steps(state, batches):
        if int(state.step) == 4:  # the call of steps 5-8: its third batch gets a target past the vocabulary
            batches = {**batches, "targets": batches["targets"].at[2, 0, 0].set(10**6)}
        return real(state, batches)

    trainer.setup = dataclasses.replace(trainer.setup, train_steps=train_steps)
    if mode == "stop":
        with pytest.raises(
            NonFiniteError, match=r"^step 7: loss nan, all gradients finite; last good checkpoint: step 4"
        ):
            trainer.run(progress=False)
        return
    assert trainer.run(progress=False).final_step == 8
    records = {r["step"]: r for r in metrics_lib.read(tmp_path / "run")}
    assert [records[s]["nonfinite_skipped"] for s in (4, 8)] == [0, 1] and np.isfinite(records[8]["loss"])
