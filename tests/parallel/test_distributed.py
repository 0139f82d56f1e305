"""Where a process learns its place: flags over MESHLM_* variables; one-line errors for incomplete setups."""

import pytest

from meshlm.model.errors import ConfigError
from meshlm.parallel.distributed import DistributedConfig, first_process_first, gather_json, initialize


def test_flags_override_the_environment():
    env = {"MESHLM_COORDINATOR": "host0:1234", "MESHLM_NUM_PROCESSES": "4", "MESHLM_PROCESS_ID": "2"}
    cfg = DistributedConfig.from_env(env)
    assert cfg == DistributedConfig("host0:1234", 4, 2, 0)
    assert cfg.with_flags(process_id=0, cpu_devices=4) == DistributedConfig(
        "host0:1234", 4, 0, 4
    )  # 0 is a value, not "unset"


@pytest.mark.parametrize(
    "cfg, message",
    [
        (DistributedConfig(num_processes=2), "needs --coordinator"),
        (DistributedConfig("localhost:1", num_processes=2, process_id=2), "--process-id=2 must be in \\[0, 2\\)"),
    ],
)
def test_incomplete_setups_are_one_line_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        initialize(cfg)


def test_bad_environment_is_a_one_line_error():
    with pytest.raises(ConfigError, match="not an integer"):
        DistributedConfig.from_env({"MESHLM_NUM_PROCESSES": "two"})


def test_single_process_helpers_need_no_collectives():
    assert gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]
    assert first_process_first(lambda: 7) == 7
