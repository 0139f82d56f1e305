"""Runs spanning several hosts under Ray: a run's processes go to the hosts of one slice, process 0 on the slice's
head; end to end (slow) on a local Ray cluster of two simulated slices of two hosts, a 2-host run whose second
process is killed is retried, resumes from its checkpoint and follows the loss curve of two plain processes."""

import dataclasses
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import ray_hosts, runner
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.store import Store
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training import faults
from meshlm.training import metrics as metrics_lib
from tests.experiments.sweep.helpers import text_corpus, write_spec
from tests.xla import child_env

HEAD = "TPU-test-head"
SLICES = [{"slice-a": 1, HEAD: 1}, {"slice-a": 1}, {"slice-b": 1, HEAD: 1}, {"slice-b": 1}]


def _node(node_id: str, resources: dict, alive: bool = True) -> dict:
    base = {"CPU": 1.0, "memory": 1e9, "object_store_memory": 1e8, f"node:{node_id}": 1.0}
    return {"NodeID": node_id, "Alive": alive, "Resources": {**base, **resources}, "NodeManagerAddress": "10.0.0.1"}


def test_a_run_takes_hosts_of_its_own_slice_with_process_0_on_the_head():
    nodes = [_node("b1", SLICES[3]), _node("a1", SLICES[1]), _node("b0", SLICES[2]), _node("a0", SLICES[0])]
    name, hosts = ray_hosts.place(nodes, "b0", 2)
    assert (name, [n["NodeID"] for n in hosts]) == ("slice-b", ["b0", "b1"])
    # Ray's TPU pod name, where it has one, even where the node holds other resources of 1 (here "spot").
    tpu = [
        _node(f"t{i}", {"my-v4-16": 1, "spot": 1, "TPU": 4} | ({"TPU-v4-16-head": 1} if i == 0 else {})) for i in (1, 0)
    ]
    name, hosts = ray_hosts.place(tpu, "t0", 2, pod_name="my-v4-16")
    assert (name, [n["NodeID"] for n in hosts]) == ("my-v4-16", ["t0", "t1"])
    with pytest.raises(ConfigError, match="'slice-a' has 1 live hosts; the run needs 2"):
        ray_hosts.place([nodes[0], _node("a1", SLICES[1], alive=False), nodes[3]], "a0", 2)
    with pytest.raises(ConfigError, match="cannot tell this node's slice"):
        ray_hosts.slice_name({"CPU": 4.0, "slice-a": 1, "slice-b": 1})


def test_several_hosts_need_a_slice_head(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", "text:none", tmp_path / "cache", launcher={"kind": "ray"})
    assert main(["sweep", "run", spec, "--out", str(tmp_path / "out"), "--hosts-per-run", "2"]) == 2
    assert "--hosts-per-run=2 needs --slice-head" in capsys.readouterr().err


def _two_plain_processes(job: dict, run_dir) -> None:
    """The run without Ray: two processes of 4 CPU devices on this machine, joined as `meshlm train` joins them."""
    script = (
        "import json, sys\n"
        "from meshlm.parallel import distributed\n"
        "distributed.initialize(distributed.DistributedConfig(sys.argv[1], 2, int(sys.argv[2]), cpu_devices=4))\n"
        "from meshlm.experiments.sweep.execute import execute\n"
        "execute(**json.loads(sys.argv[3]))\n"
    )
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = child_env(faults.ENV)
    args = json.dumps({**job, "run_dir": str(run_dir)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"localhost:{port}", str(i), args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=540)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_a_two_host_run_survives_a_killed_host_and_equals_two_plain_processes(tmp_path):
    from ray.cluster_utils import Cluster

    from meshlm.experiments.sweep.launchers import RayLauncher

    class KillingLauncher(RayLauncher):
        """Process 1 of the first try dies while saving step 10, the last (checkpoints at 5 and 10)."""

        def environment(self, job, process_id):
            env = super().environment(job, process_id)
            if (job.attempt, process_id) == (1, 1):
                env[faults.ENV] = "checkpoint:10"
            return env

    (tmp_path / "corpus").mkdir()
    corpus = text_corpus(tmp_path / "corpus")
    batch = {"target_steps": 20, "min_tokens": 256, "max_tokens": 256}  # batch 8: one row per device
    path = write_spec(tmp_path / "spec.yaml", corpus, tmp_path / "cache", rules={"batch": batch}, mesh="data=8")
    spec = dataclasses.replace(spec_lib.load(path), retry_backoff_s=0)
    (run,) = plan_lib.resolve(spec)
    assert (run.config.train.steps, run.config.train.checkpoint_every) == (10, 5)

    cluster = Cluster()
    for resources in SLICES:
        cluster.add_node(num_cpus=1, resources=resources, object_store_memory=80 * 2**20, include_dashboard=False)
    try:
        launcher = KillingLauncher(address=cluster.address, hosts_per_run=2, slice_head=HEAD, cpu_devices=4)
        assert launcher.slots == 2  # one run per slice
        outcome = runner.run_sweep(spec, tmp_path / "out", launcher, progress=False, log=lambda *_: None)
    finally:
        cluster.shutdown()
    assert (outcome.finished, outcome.failed) == (1, 0)
    state = Store(tmp_path / "out").states()[run.run_id]
    assert state.attempts == 2
    run_dir = tmp_path / "out" / runner.RUNS / run.run_id
    records = metrics_lib.read(run_dir)
    assert [r["step"] for r in records if "loss" in r] == [5, 10]
    assert "resumed from step 5" in (run_dir / "sweep.log").read_text()

    job = {
        "config": config_lib.to_dict(run.config),
        "tokenizer": str(runner.data_dir(tmp_path / "out", run.config) / "tokenizer.model"),
        "compile_cache": "",
    }
    _two_plain_processes(job, tmp_path / "plain")
    plain = metrics_lib.read(tmp_path / "plain")
    for key in ("loss", "val_loss"):
        ours, theirs = [r[key] for r in records if key in r], [r[key] for r in plain if key in r]
        assert len(ours) == len(theirs) > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
