import json

import pytest

from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib


def test_overrides_by_dotted_path_are_typed():
    cfg = config_lib.from_preset(
        "tiny", ["model.d_model=64", "model.bias=false", "train.optimizer.peak_lr=3e-4", "model.norm=rmsnorm"]
    )
    assert cfg.model.d_model == 64 and cfg.model.bias is False and cfg.model.norm == "rmsnorm"
    assert cfg.train.optimizer.peak_lr == 3e-4


def test_json_round_trip_is_exact(tmp_path):
    cfg = config_lib.from_preset("tiny-modern", ["train.steps=7"])
    config_lib.save(cfg, tmp_path / "config.json")
    assert config_lib.load(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["model"]["position"] == "rotary"


def test_a_tuple_field_round_trips_through_json_and_as_to_dict_leaves_it():
    """train.checkpoint_steps, kept by a sweep's cooldown trunk: a Ray task receives to_dict's tuples, not JSON."""
    cfg = config_lib.from_preset("tiny", ["train.checkpoint_steps=16,33", "train.optimizer.decay_shape=1-sqrt"])
    assert cfg.train.checkpoint_steps == (16, 33) and cfg.train.optimizer.decay_shape == "1-sqrt"
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg
    assert config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="checkpoint_steps=0,4 must be positive"):
        config_lib.from_preset("tiny", ["train.checkpoint_steps=0,4"]).validate()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.widht=3", "unknown config key 'model.widht'"),
        ("model.d_model=big", "expected int"),
        ("model.norm=batch", "expected layernorm | rmsnorm"),
        ("model", "not of the form key.path=value"),
        ("train.optimizer=1", "is a section"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.from_preset("tiny", [override])


def test_cross_section_checks_run_before_anything_compiles():
    cfg = config_lib.from_preset("tiny", ["train.batch_size=10", "train.micro_batches=3"])
    with pytest.raises(ConfigError, match="micro_batches=3 does not divide"):
        cfg.validate()
    with pytest.raises(ConfigError, match="exceeds model.vocab_size"):
        config_lib.from_preset("tiny", ["data.vocab_size=10000"]).validate()
