"""Timing contestants fairly: they take turns, so load from other processes falls on all of them alike."""

import resource
import time
from collections.abc import Callable

IDLE_WINDOW_S = 0.02
SETTLE_LIMIT_S = 1.0


def process_cpu_s() -> float:
    """CPU seconds this process's threads have used, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle(cpu_s: Callable[[], float] = process_cpu_s, limit_s: float = SETTLE_LIMIT_S) -> float:
    """Wait until this process's threads stop working (no CPU time used over IDLE_WINDOW_S), at most limit_s;
    returns the seconds waited. A call can return before its work is over: XLA:CPU frees a step's temporary
    buffers on its own threads after the outputs are ready (~60 ms of unmapping after a cpu-small call), so
    without this the next contestant would be timed while that work takes a core."""
    start = time.perf_counter()
    used = cpu_s()
    while time.perf_counter() - start < limit_s:
        time.sleep(IDLE_WINDOW_S)
        now = cpu_s()
        if now - used < IDLE_WINDOW_S / 20:
            break
        used = now
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, the functions taking turns, each starting on a settled process."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            settle()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
