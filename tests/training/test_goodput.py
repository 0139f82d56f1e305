"""goodput.json on a scripted clock: each cause gets exactly the time the script spends on it, a killed and resumed
run counts the steps it trains again as badput, and the sweep report sums the causes over runs."""

import json
import types

import pytest

from meshlm.experiments.sweep import badput
from meshlm.training import faults, goodput
from meshlm.training import setup as setup_lib
from meshlm.training import trainer as trainer_lib
from meshlm.training.trainer import Trainer
from tests.training.helpers import small_config, text_corpus, tick_train_calls

STEP, BATCH, HOOK, SAVE, RESTORE, STARTUP = 10.0, 1.0, 5.0, 2.0, 3.0, 7.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return text_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """A clock that moves only where a test moves it, read by the trainer and by goodput."""
    now = [0.0]
    scripted = types.SimpleNamespace(perf_counter=lambda: now[0])
    monkeypatch.setattr(trainer_lib, "time", scripted)
    monkeypatch.setattr(goodput, "time", scripted)
    return now


class _TickingLoader:
    def __init__(self, loader, clock: list[float]):
        self.loader, self.clock = loader, clock

    def __next__(self):
        self.clock[0] += BATCH
        return next(self.loader)

    def get_state(self):
        return self.loader.get_state()


def _ticking(fn, clock: list[float], seconds: float):
    def run(*args, **kwargs):
        clock[0] += seconds
        return fn(*args, **kwargs)

    return run


def test_wall_time_splits_into_productive_steps_and_each_cause(corpus, tmp_path, clock):
    """8 steps of 10 s, each batch 1 s to load, a 5 s hook after steps 4 and 8, 2 s to start each save (steps 4
    and 8), 7 s between setting up and the first step. The first call compiles: its step counts as compile."""
    every = {"train.log_every": 2, "train.checkpoint_every": 4, "train.eval_every": 4}
    log = []
    trainer = Trainer(small_config(corpus, tmp_path, steps=8, **every), tmp_path / "run", log=log.append)
    tick_train_calls(trainer, clock, STEP)
    trainer.train_iter = _TickingLoader(trainer.train_iter, clock)
    trainer.checkpointer.save = _ticking(trainer.checkpointer.save, clock, SAVE)
    trainer.add_hook(4, lambda step, state: clock.__setitem__(0, clock[0] + HOOK))
    clock[0] += STARTUP
    trainer.run(progress=False)

    saved = json.loads((tmp_path / "run" / goodput.FILE).read_text())
    expected = dict.fromkeys(goodput.CAUSES, 0.0)
    expected.update(
        productive=7 * STEP, compile=STEP, data_wait=8 * BATCH, evaluation=2 * HOOK, checkpoint_save=2 * SAVE
    )
    expected["startup"] = STARTUP
    assert saved["seconds"] == expected
    assert saved["total_seconds"] == sum(expected.values())
    assert saved["goodput"] == pytest.approx(7 * STEP / sum(expected.values()))
    # Waits after the loader's first batch: by the first record (step 2), 1 s against 10 s of steps, over 5 %; said
    # once, though every later record is over too.
    warnings = [line for line in log if "waiting for data" in line]
    assert len(warnings) == 1 and "took 1.0 s, 10% of step time" in warnings[0]


def test_a_killed_run_resumed_counts_the_steps_it_trains_again_as_recomputed(corpus, tmp_path, clock, monkeypatch):
    """Checkpoints every 4 steps, records every 2: killed after training step 7, the last record is step 6, two
    steps past the checkpoint the rerun resumes from. Those 20 s move from productive to recomputed."""
    cfg = small_config(corpus, tmp_path, steps=8, **{"train.log_every": 2, "train.checkpoint_every": 4})

    class Killed(Exception):
        pass

    kills = [("step", 7)]

    def kill_point(point, step):
        if (point, step) in kills:
            kills.clear()
            raise Killed

    monkeypatch.setattr(faults, "kill_point", kill_point)
    first = Trainer(cfg, tmp_path / "run")
    tick_train_calls(first, clock, STEP)
    with pytest.raises(Killed):
        first.run(progress=False)
    first.checkpointer.wait()  # the save of step 4 had finished when the process died

    restore = setup_lib.TrainSetup.restore_or_init
    monkeypatch.setattr(setup_lib.TrainSetup, "restore_or_init", _ticking(restore, clock, RESTORE))
    second = Trainer(cfg, tmp_path / "run")
    assert int(second.state.step) == 4
    tick_train_calls(second, clock, STEP)
    second.run(progress=False)

    seconds = json.loads((tmp_path / "run" / goodput.FILE).read_text())["seconds"]
    # First start: step 1 compiles, steps 2-6 recorded (2-4 before the checkpoint). Second: step 5 compiles, 6-8.
    assert seconds["recomputed"] == 2 * STEP
    assert seconds["productive"] == 3 * STEP + 3 * STEP
    assert seconds["compile"] == 2 * STEP
    assert seconds["checkpoint_restore"] == RESTORE


def test_the_sweep_report_sums_badput_by_cause_over_runs(tmp_path):
    for name, seconds in (("a", {"productive": 30.0, "compile": 6.0}), ("b", {"productive": 10.0, "recomputed": 4.0})):
        (tmp_path / name).mkdir()
        (tmp_path / name / goodput.FILE).write_text(json.dumps({"seconds": seconds}))
    runs, summed = badput.totals(tmp_path)
    assert runs == 2 and summed["productive"] == 40.0 and summed["compile"] == 6.0 and summed["recomputed"] == 4.0
    table = "\n".join(badput.section(tmp_path))
    assert "| productive | 0.011 | 80.0% |" in table
    assert table.index("| compile |") < table.index("| recomputed |") < table.index("| data_wait |")


def test_data_waits_warn_past_5_percent_of_step_time_and_a_second(tmp_path, clock):
    """Half a second of waiting is half of a tiny run's step time, and not worth a warning; 1.5 s in 20 s is."""
    for waited, stepped, warns in ((0.5, 1.0, False), (1.5, 20.0, True), (1.5, 40.0, False)):
        account = goodput.Goodput.open(tmp_path, writes=False)
        account.loop_started(0)
        account.loader_started()
        account.add("data_wait", waited)
        clock[0] += waited + stepped
        assert bool(account.data_wait_warning()) == warns, (waited, stepped)
