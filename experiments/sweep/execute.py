"""One sweep run on whatever process runs it (the driver, or a Ray worker): train, then summarise metrics.jsonl."""

import contextlib
import os
import pathlib
import shutil
import socket
import statistics
import time

import jax
from jax.experimental.compilation_cache import compilation_cache

from meshlm.experiments.sweep.store import RunResult
from meshlm.model.flops import flops_per_token
from meshlm.parallel import distributed
from meshlm.training import checkpoint
from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training.run_dir import CHECKPOINTS
from meshlm.training.trainer import train

LOG = "sweep.log"  # the trainer's log lines, since the driver's terminal shows the sweep's progress instead


def execute(
    config: dict, run_dir: str, tokenizer: str, compile_cache: str = "", branch_from: str = "", branch_step: int = 0
) -> RunResult | None:
    """Train (or resume, or just re-read) the run in run_dir and return what the store records of it; None on the
    processes other than 0 of a multi-process run, which log no metrics.

    branch_from: a cooldown branch's trunk run directory; a branch without a checkpoint of its own starts from the
    trunk's checkpoint of branch_step (a copy: the trunk's folder is only read)."""
    cfg = config_lib.from_dict(config)
    path = pathlib.Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    if branch_from:
        source, target = pathlib.Path(branch_from) / CHECKPOINTS, path / CHECKPOINTS
        distributed.first_process_first(lambda: checkpoint.copy_step(source, target, branch_step))
    if not (path / "tokenizer.model").exists():
        # The sweep's tokenizer, trained once by the driver: the trainer loads a run's own copy when it finds one.
        # A temporary name of this process's own: every host of a multi-host run copies it at once.
        partial = path / f"tokenizer.model.{socket.gethostname()}-{os.getpid()}.tmp"
        shutil.copyfile(tokenizer, partial)
        partial.replace(path / "tokenizer.model")
    with (path / LOG).open("a") as log_file:

        def log(*parts) -> None:
            print(*parts, file=log_file, flush=True)

        start = time.perf_counter()
        with persistent_compile_cache(compile_cache):
            result = train(cfg, path, progress=False, log=log)
        wall = time.perf_counter() - start
    if jax.process_index() != 0:
        return None
    return summarise(cfg, metrics_lib.read(path), wall_time_s=wall, resumed_from_step=result.start_step)


@contextlib.contextmanager
def persistent_compile_cache(directory: str):
    """JAX's on-disk compilation cache in `directory` for the duration of one run, then off again: runs of one shape
    at several budgets share their programs, and nothing else in this process (a notebook, a test session) inherits
    a global setting it did not ask for."""
    if not directory or jax.config.jax_compilation_cache_dir:
        yield
        return
    min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
        compilation_cache.reset_cache()


def summarise(cfg: config_lib.Config, records: list[dict], wall_time_s: float, resumed_from_step: int) -> RunResult:
    step_tokens = cfg.train.batch_size * cfg.seq_len
    val = tuple((r["step"] * step_tokens, r["val_loss"]) for r in records if "val_loss" in r)
    losses = tuple((r["step"] * step_tokens, r["loss"]) for r in records if "loss" in r)
    if not val or records[-1]["step"] != cfg.train.steps:
        raise RuntimeError(f"the run stopped before step {cfg.train.steps} or logged no validation loss")
    speeds = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
    tokens_per_s = statistics.median(speeds) if speeds else None
    per_token = flops_per_token(cfg.model, cfg.seq_len).total
    return RunResult(
        final_val_loss=val[-1][1],
        final_train_loss=losses[-1][1] if losses else None,
        val_curve=val,
        train_curve=losses,
        wall_time_s=wall_time_s,
        tokens_per_s=tokens_per_s,
        flops_per_s=tokens_per_s * per_token if tokens_per_s else None,
        resumed_from_step=resumed_from_step,
        host=socket.gethostname(),
    )
