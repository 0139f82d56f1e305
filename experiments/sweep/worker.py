"""The process one local sweep run lives in: `python -m meshlm.experiments.sweep.worker` reads its job as JSON on
stdin, trains, leaves the outcome in RUN_DIR/sweep-outcome.json and exits 0 (a result), DETERMINISTIC_EXIT (a
failure a retry cannot fix) or anything else (a retryable one; a killed worker writes nothing).

A process per run, not the driver's own: a run that is killed (the kernel's OOM killer, a preemption, the tests'
MESHLM_KILL_AT) takes only itself down, and no JAX state carries over from one run to the next.
"""

import dataclasses
import json
import os
import pathlib
import sys
import threading
import time
import traceback

from meshlm.experiments.sweep.execute import execute
from meshlm.experiments.sweep.failures import DETERMINISTIC_EXIT, classify
from meshlm.experiments.sweep.store import RunResult
from meshlm.training.atomic import write_atomic
from meshlm.training.errors import PREEMPTED_EXIT_CODE, Preempted

OUTCOME = "sweep-outcome.json"


def main() -> int:
    request = json.load(sys.stdin)
    _exit_when_orphaned(request["parent"])
    job = request["job"]
    path = pathlib.Path(job["run_dir"]) / OUTCOME
    try:
        result = execute(
            job["config"],
            job["run_dir"],
            job["tokenizer"],
            job["compile_cache"],
            job["branch_from"],
            job["branch_step"],
        )
    except Exception as e:
        traceback.print_exc()  # into the run's sweep.log, where the launcher sends this process's output
        failure = classify(e)
        write_atomic(path, json.dumps({"failure": failure.reason}))
        if isinstance(e, Preempted):  # the trainer's own exit status, for whoever reads this process's
            return PREEMPTED_EXIT_CODE
        return 1 if failure.retryable else DETERMINISTIC_EXIT
    write_atomic(path, json.dumps({"result": dataclasses.asdict(result)}))
    return 0


def read_outcome(run_dir: str) -> RunResult | str | None:
    """What the worker left in run_dir: its result, the reason it failed, or None when it was killed first."""
    path = pathlib.Path(run_dir) / OUTCOME
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if "failure" in saved:
        return saved["failure"]
    fields = saved["result"]
    curves = {k: tuple(map(tuple, fields[k])) for k in ("val_curve", "train_curve")}
    return RunResult(**{**fields, **curves})


def _exit_when_orphaned(parent: int) -> None:
    """Die with the driver: its claim on the run dies with it, and the next driver must not find this process still
    writing the run directory it resumes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
