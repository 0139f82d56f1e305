"""`meshlm train` as 2 processes of 4 CPU devices (gloo collectives) follows the loss curve of 1 process of 8.

The data pipeline gives each process its own documents (documents[i::2]), so a step's global batch depends on the
process count. The 1-process reference therefore builds both processes' pipelines itself and concatenates their
batches: the same global batch of every step, on 8 devices in this pytest process. The run is then resumed by 2
processes on another mesh (fsdp=8), from the checkpoint the first mesh wrote, and must go on along the same curve.
"""

import random
import socket
import subprocess
import sys

import numpy as np
import pytest

from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from meshlm.training import config as config_lib
from meshlm.training import metrics
from meshlm.training import setup as setup_lib
from meshlm.training.data import build_pipeline
from tests.xla import child_env

SETTINGS = [
    "model.n_layers=2",
    "model.d_model=64",
    "model.vocab_size=512",
    "model.n_ctx=32",
    "data.vocab_size=320",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.log_every=1",
    "train.eval_every=100",
    "train.checkpoint_every=2",
    "train.eval_batches=1",
    "train.optimizer.schedule=constant",
    "train.optimizer.warmup_steps=0",
]


def _corpus(root) -> str:
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "tu", "re", "sa", "no", "vi", "de", "po"]
    (root / "corpus").mkdir()
    for i in range(200):
        words = " ".join("".join(rng.choices(syllables, k=rng.randint(1, 2))) for _ in range(rng.randint(3, 40)))
        (root / "corpus" / f"doc{i:03d}.txt").write_text(words + "\n")
    return f"text:{root}/corpus/*.txt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_two_processes(
    run_dir, data: str, mesh: str, steps: int, settings=(), signal_at=("", ""), returncode: int = 0
) -> list[subprocess.CompletedProcess]:
    """`settings`: more --set items; `signal_at`: each process's MESHLM_SIGNAL_AT (meshlm.training.faults)."""
    env = child_env("MESHLM_SIGNAL_AT")  # each process gets its 4 devices from --cpu-devices
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "meshlm.experiments.cli",
        "train",
        "--preset",
        "tiny",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        "--data",
        data,
        "--mesh",
        mesh,
        "--coordinator",
        f"localhost:{port}",
        "--num-processes",
        "2",
        "--cpu-devices",
        "4",
    ]
    argv += [
        arg
        for item in SETTINGS + list(settings) + [f"train.steps={steps}", f"data.cache_dir={run_dir.parent / 'cache'}"]
        for arg in ("--set", item)
    ]
    procs = [
        subprocess.Popen(
            argv + ["--process-id", str(i)],
            env={**env, "MESHLM_SIGNAL_AT": signal_at[i]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=540)
        assert proc.returncode == returncode, f"process {i}: {err[-3000:]}"
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _one_process_losses(run_dir, steps: int) -> list[float]:
    """The trainer's setup on this process's 8 devices, fed both processes' batches side by side."""
    cfg = config_lib.load(run_dir / "config.json")
    t = cfg.train
    partitioner = Partitioner.build(MeshConfig("data=2,fsdp=2,tensor=2"))
    iterators = [
        build_pipeline(
            cfg.data,
            run_dir,
            seq_len=cfg.seq_len,
            batch_size=t.batch_size // 2,
            seed=t.seed,
            process_index=i,
            process_count=2,
        ).train_iterator()
        for i in range(2)
    ]
    setup = setup_lib.build(cfg, partitioner)
    state, step = setup.init_state(), setup.train_step
    losses = []
    for _ in range(steps):
        pieces = [next(it) for it in iterators]
        batch = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        state, out = step(state, partitioner.global_batch(batch, t.batch_size))
        losses.append(float(out["loss"]))
    return losses


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_another_mesh(tmp_path):
    run_dir = tmp_path / "run"
    data = _corpus(tmp_path)
    first = _train_two_processes(run_dir, data, "data=2,fsdp=2,tensor=2", steps=4)
    assert "step 4/4" in first[0].stdout and "step " not in first[1].stdout  # only process 0 logs
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2", "4"]

    second = _train_two_processes(run_dir, data, "fsdp=8", steps=6)
    assert "resumed from step 4" in second[0].stdout and "'fsdp': 8" in second[0].stdout

    records = metrics.read(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in records], _one_process_losses(run_dir, 6), rtol=1e-5)

    # A process with one device samples from the checkpoint the 8-device mesh wrote.
    env = child_env()
    argv = [
        sys.executable,
        "-m",
        "meshlm.experiments.cli",
        "generate",
        "--run-dir",
        str(run_dir),
        "--prompt",
        "ka",
        "--max-new-tokens",
        "4",
    ]
    sample = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0 and "--- prompt: 'ka'" in sample.stdout, sample.stderr[-2000:]
