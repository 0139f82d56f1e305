"""Where a process learns its place: flags over MESHLM_* variables; one-line errors for incomplete setups; processes
that reach a collective further apart than gloo waits."""

import re
import subprocess
import sys

import pytest

from meshlm.model.errors import ConfigError
from meshlm.parallel.distributed import DistributedConfig, first_process_first, gather_json, initialize
from tests.parallel.test_multihost import _free_port
from tests.xla import child_env


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


_OUT_OF_STEP = """
import sys, time
import numpy as np
from meshlm.parallel import distributed
distributed.initialize(distributed.DistributedConfig(sys.argv[1], 2, int(sys.argv[2]), cpu_devices=4))
import jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

def summed(devices):
    mesh = Mesh(np.array(devices), ("x",))
    mine = sum(d.process_index == jax.process_index() for d in devices)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("x")), np.ones(mine, np.float32))
    return jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P())), x

late = [float(s) for s in sys.argv[3:5]] if jax.process_index() == 1 else [0.0, 0.0]
total, x = summed(jax.devices())  # every device: its context was made at start
time.sleep(late[0])
print("every device", float(total(x)))
total, x = summed(jax.local_devices(process_index=0)[:2] + jax.local_devices(process_index=1)[:2])
total = distributed.compiled_in_step(total)  # a new set of devices: met on before its first run
time.sleep(late[1])
print("four devices", float(total(x)))
"""


@pytest.mark.slow
def test_processes_further_apart_than_gloo_waits_still_meet_at_their_collectives():
    """Gloo fails a collective over a new set of devices if the processes reach it more than 30 s apart. Process 1
    comes 33 s late to the collective over every device in one pair of processes and to the one over four devices in
    another; the pairs run side by side, as the lateness is spent asleep."""
    env, ports = child_env(), {_free_port()}
    while len(ports) < 2:
        ports.add(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OUT_OF_STEP, f"localhost:{port}", str(i), *lateness],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port, lateness in zip(ports, (("33", "0"), ("0", "33")))
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        # Gloo writes its own lines to stdout too.
        assert re.findall(r"(every device|four devices) ([\d.]+)", out) == [
            ("every device", "8.0"),
            ("four devices", "4.0"),
        ]
