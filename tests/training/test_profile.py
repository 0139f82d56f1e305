"""`train.profile` / `meshlm train --profile START:STOP`: a jax.profiler trace of exactly that window of steps, laid
out as TensorBoard's profile plugin and xprof read it (RUN_DIR/profile/plugins/profile/RUN/HOST.xplane.pb)."""

import pytest

from meshlm.experiments.cli import main
from meshlm.model.errors import ConfigError
from meshlm.training import profile
from meshlm.training import trainer as trainer_lib
from tests.training.helpers import overrides_of, quiet, small_config, text_corpus


def test_a_profiled_run_writes_one_trace_holding_the_train_step(tmp_path):
    """--profile 1:3 on a 4-step run: the trace is on for steps 2 and 3 only, and holds the train step's module."""
    trainer = trainer_lib.Trainer(
        small_config(text_corpus(tmp_path), tmp_path, steps=4, **{"train.profile": "1:3"}), tmp_path / "run", log=quiet
    )
    trace_steps = []
    original = trainer._train_call

    def watched(state, step, done):
        if trainer.profiler.active:
            trace_steps.extend(range(step + 1, done + 1))
        return original(state, step, done)

    trainer._train_call = watched
    trainer.run(progress=False)
    assert trace_steps == [2, 3] and not trainer.profiler.active
    traces = list((tmp_path / "run" / profile.DIR / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1
    assert TRAIN_STEP_MODULE in traces[0].read_bytes()


TRAIN_STEP_MODULE = b"jit_step"  # XLA's module name of the jitted train step (training/train_step.py: step)


@pytest.mark.parametrize("text", ["3:1", "2:2", "-1:4", "5", "a:b"])
def test_a_bad_window_is_refused_with_the_form_to_use(text):
    with pytest.raises(ConfigError, match="START"):
        profile.parse_window(text)


def test_the_flag_sets_the_config_field_and_is_checked(tmp_path, capsys):
    corpus = text_corpus(tmp_path)
    argv = ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--profile", "4:2"]
    assert main(argv + [f"--set={o}" for o in overrides_of(small_config(corpus, tmp_path))]) == 2
    assert "train.profile='4:2'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
