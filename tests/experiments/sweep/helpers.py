"""A small local corpus, tiny sweep specs (runs of a few dozen steps on a 16-wide, one-layer model) and a launcher
that trains nothing."""

import random

import yaml

from meshlm.experiments.sweep.store import RunResult

FAKE = RunResult(
    final_val_loss=3.0,
    final_train_loss=3.0,
    val_curve=((1, 3.0),),
    train_curve=((1, 3.0),),
    wall_time_s=1.0,
    tokens_per_s=None,
    flops_per_s=None,
    resumed_from_step=0,
    host="here",
)


class FakeLauncher:
    """Returns FAKE for every job without training; `fail` maps a run id to the Failures its tries end in, in order
    (tries past the list succeed)."""

    def __init__(self, fail=None, slots=1):
        self.fail = {run_id: list(failures) for run_id, failures in (fail or {}).items()}
        self.slots = slots
        self.queue, self.ran, self.jobs, self.timeouts = [], [], [], []

    def submit(self, job):
        self.queue.append(job)

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        job = self.queue.pop(0)
        self.ran.append(job.run_id)
        self.jobs.append(job)
        failures = self.fail.get(job.run_id)
        return job, (failures.pop(0) if failures else FAKE)

    def close(self):
        pass


def text_corpus(root) -> str:
    rng = random.Random(0)
    words = "the king queen lord lady sword crown night day love death fair foul heart blood".split()
    for i in range(40):
        lines = [" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(150)]
        (root / f"play{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return f"text:{root}/*.txt"


def write_spec(path, corpus: str, cache, **fields) -> str:
    spec = {
        "name": "test",
        "preset": "tiny",
        "data": {"source": corpus, "vocab_size": 300, "cache_dir": str(cache)},
        "seq_len": 32,
        "head_dim": 8,
        "budgets": [1.6e8],
        "shapes": [{"d_model": 16, "n_layers": 1}],
        "rules": {"batch": {"target_steps": 20, "min_tokens": 128, "max_tokens": 128}},
        "eval": {"sequences": 8, "per_run": 2},
        "checkpoints_per_run": 2,
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return str(path)
