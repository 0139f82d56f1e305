"""Test-only fault injection: with MESHLM_KILL_AT=POINT:STEP the process sends itself SIGKILL when the trainer
reaches POINT at STEP, so the kill-anywhere test chooses its kill points instead of hoping to hit them.

Points: `setup` (config and tokenizer written, before the first step; STEP is the step resumed from),
`step` (step STEP dispatched, nothing logged), `metrics` (step STEP logged), `checkpoint` (the asynchronous save
of step STEP started and still being written)."""

import os
import signal

ENV = "MESHLM_KILL_AT"
_SPEC = os.environ.get(ENV, "")


def kill_point(point: str, step: int) -> None:
    if _SPEC and _SPEC == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
