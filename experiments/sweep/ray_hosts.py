"""A run that spans several hosts (a multi-host TPU slice, a group of GPU nodes) under Ray: one task per host, joined
into one JAX runtime, all on one slice.

A slice is the set of Ray nodes that hold a resource named after it (1 on each host; Ray gives Cloud TPU hosts the
TPU's name), with a head resource on its first host only (`TPU-v4-16-head`). A run's orchestrator task claims the
head, so a slice trains one run at a time; it starts a host task on each node of its slice, process 0 on its own
node, where the JAX coordinator listens, and returns process 0's result or the run's Failure.
"""

import dataclasses
import socket

from meshlm.experiments.sweep.execute import execute
from meshlm.experiments.sweep.failures import Failure, classify
from meshlm.experiments.sweep.store import RunResult
from meshlm.model.errors import ConfigError
from meshlm.parallel import distributed

# Resources every Ray node may hold that name no slice.
_STANDARD = {"CPU", "GPU", "TPU", "memory", "object_store_memory"}


@dataclasses.dataclass(frozen=True)
class Hosts:
    count: int
    cpus: float = 1.0  # per host task
    gpus: float = 0.0
    tpus: float = 0.0  # Ray's `TPU` resource: chips
    cpu_devices: int = 0  # simulated CPU devices per process (tests)


def slice_name(resources: dict[str, float]) -> str:
    """The slice a node belongs to: its one custom resource of 1 that is not a head or accelerator resource."""
    names = [
        k
        for k, v in resources.items()
        if v == 1
        and k not in _STANDARD
        and not k.startswith(("node:", "accelerator_type:"))
        and not k.endswith("-head")
    ]
    if len(names) != 1:
        raise ConfigError(
            f"cannot tell this node's slice from its Ray resources {sorted(resources)}; start Ray on every host of a "
            "slice with --resources='{\"SLICE_NAME\": 1}' (Cloud TPU hosts get it from the TPU's name)"
        )
    return names[0]


def place(nodes: list[dict], here: str, count: int, pod_name: str | None = None) -> tuple[str, list[dict]]:
    """The slice of node `here` (Ray's TPU pod name, else read from its resources) and `count` of its live nodes
    (ray.nodes() entries), `here` first: process 0 runs where the orchestrator found a free port."""
    alive = [n for n in nodes if n["Alive"]]
    own = next(n for n in alive if n["NodeID"] == here)
    name = pod_name or slice_name(own["Resources"])
    members = [own] + [n for n in alive if n is not own and n["Resources"].get(name)]
    if len(members) < count:
        raise ConfigError(f"slice {name!r} has {len(members)} live hosts; the run needs {count}")
    return name, members[:count]


def run_on_slice(job: dict, hosts: Hosts, envs: list[dict[str, str]]) -> RunResult | Failure:
    """The orchestrator task: start the run's host tasks on this node's slice and wait for all of them."""
    import ray
    import ray.util.tpu
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    name, nodes = place(ray.nodes(), here, hosts.count, ray.util.tpu.get_current_pod_name())
    config = distributed.DistributedConfig(
        f"{nodes[0]['NodeManagerAddress']}:{_free_port()}", hosts.count, cpu_devices=hosts.cpu_devices
    )
    host = ray.remote(max_calls=1, max_retries=0)(_host)  # a fresh process per host task, retried by the driver
    refs = [
        host.options(
            num_cpus=hosts.cpus,
            num_gpus=hosts.gpus,
            # The slice's resource (1 per host) keeps a second run's hosts off this slice's nodes.
            resources={name: 1, **({"TPU": hosts.tpus} if hosts.tpus else {})},
            runtime_env={"env_vars": envs[i]},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(job, dataclasses.replace(config, process_id=i))
        for i, node in enumerate(nodes)
    ]
    return _gather(ray, refs)


def _host(job: dict, config: distributed.DistributedConfig) -> RunResult | None:
    distributed.initialize(config)  # before execute touches a device
    return execute(
        job["config"], job["run_dir"], job["tokenizer"], job["compile_cache"], job["branch_from"], job["branch_step"]
    )


def _gather(ray, refs: list) -> RunResult | Failure:
    """Process 0's result once every host finished; on the first failure, the others are killed (a process left
    alone would wait in a collective for a peer that is gone) and the failure is the run's."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(done[0])
        except Exception as e:  # a RayTaskError wraps the run's own exception as its cause; a dead worker has none
            for ref in pending:
                ray.cancel(ref, force=True)
            return classify(getattr(e, "cause", None) or e)
    return ray.get(refs[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
