"""A jax.profiler trace of a window of training steps, written where TensorBoard's profile plugin and xprof look
(RUN_DIR/profile/plugins/profile/RUN/HOST.xplane.pb)."""

import jax
from etils import epath

from meshlm.model.errors import ConfigError

DIR = "profile"


def parse_window(text: str) -> tuple[int, int] | None:
    """ "A:B" -> (A, B): the steps after step A up to step B; "" -> None."""
    if not text:
        return None
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"train.profile={text!r}: give START:STOP, e.g. 5:8 traces steps 6 to 8") from None
    if not 0 <= first < last:
        raise ConfigError(f"train.profile={text!r}: START must be at least 0 and below STOP, e.g. 5:8")
    return first, last


class StepProfiler:
    """Traces from the state at step `first` to the state at step `last`. One trace per run: a resumed run that
    starts inside the window traces from where it starts."""

    def __init__(self, window: tuple[int, int] | None, run_dir: epath.Path):
        self.window, self.log_dir, self.active = window, str(run_dir / DIR), False

    @property
    def steps(self) -> frozenset[int]:
        """The steps after which the trace starts or stops."""
        return frozenset(self.window or ())

    def begin(self, step: int) -> None:
        if self.window and self.window[0] < step < self.window[1]:
            self._start()

    def after_step(self, done: int, state) -> dict:
        if self.window and done == self.window[0]:
            self._start()
        elif self.window and done == self.window[1]:
            jax.block_until_ready(state)  # the last step's work belongs in the trace
            self.close()
        return {}

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False

    def _start(self) -> None:
        jax.profiler.start_trace(self.log_dir)
        self.active = True
