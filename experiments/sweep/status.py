"""Where a sweep stands (`meshlm sweep status DIR`): every run by state, its progress, tries and last failure, and
the time left at the FLOP/s the store has measured (the runner's estimate)."""

import collections
import dataclasses
import pathlib

from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.runner import RUNS, duration, estimate_seconds
from meshlm.experiments.sweep.store import DONE, FAILED, FILE, PENDING, RETRYING, RUNNING, Store
from meshlm.model.errors import ConfigError
from meshlm.training import metrics as metrics_lib

ORDER = (DONE, RUNNING, PENDING, RETRYING, FAILED)


@dataclasses.dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: str
    step: int  # the last step in its metrics.jsonl (the total once done)
    steps: int
    attempts: int
    reason: str  # the last failure's
    eta_s: float | None  # time left; None when done or failed, or when the store holds no spec for its sweep


def read(directory: str | pathlib.Path) -> list[RunStatus]:
    """Every run in DIR's store, grouped by state in ORDER, in plan order within a state."""
    path = pathlib.Path(directory)
    if not (path / FILE).is_file():
        raise ConfigError(f"{directory} holds no {FILE}; run `meshlm sweep run SPEC --out {directory}` first")
    store = Store(path)
    try:
        states, measured = store.states(), store.measured_flops_per_s()
        specs: dict[str, spec_lib.Spec | None] = {}
        out = []
        for sweep, run in store.planned():
            if sweep not in specs:
                specs[sweep] = _spec(store.get_meta(f"spec:{sweep}"))
            state, steps, spec = states[run.run_id], run.config.train.steps, specs[sweep]
            step = steps if state.state == DONE else _last_step(path / RUNS / run.run_id)
            left = state.state not in (DONE, FAILED) and spec is not None
            # A cooldown branch's estimate is for its decay alone: the steps from its trunk's.
            to_go = (steps - max(step, run.branch_step)) / (steps - run.branch_step)
            eta = estimate_seconds(spec, run, measured) * to_go if left else None
            out.append(RunStatus(run.run_id, state.state, step, steps, state.attempts, state.reason, eta))
    finally:
        store.close()
    return sorted(out, key=lambda s: ORDER.index(s.state))


def _spec(saved: dict | None) -> spec_lib.Spec | None:
    try:
        return spec_lib.parse(saved) if saved else None
    except ConfigError:  # written by a meshlm whose spec had fields this one does not know
        return None


def _last_step(run_dir: pathlib.Path) -> int:
    records = metrics_lib.read(run_dir)
    return records[-1]["step"] if records else 0


def summary(statuses: list[RunStatus]) -> dict:
    counts = collections.Counter(s.state for s in statuses)
    return {
        "counts": {state: counts[state] for state in ORDER},
        "eta_s": sum(s.eta_s for s in statuses if s.eta_s is not None),
        "eta_complete": all(s.eta_s is not None for s in statuses if s.state not in (DONE, FAILED)),
    }


def text(statuses: list[RunStatus]) -> str:
    total = summary(statuses)
    lines = [
        ", ".join(f"{n} {state}" for state, n in total["counts"].items())
        + f"; {duration(total['eta_s'])}{'' if total['eta_complete'] else '+'} left with one run at a time "
        "(measured FLOP/s of finished runs of the same width where there are some, else the spec's estimate)",
        f"{'state':9s} {'run':16s} {'steps':>13s} {'tries':>5s} {'left':>7s}  last failure",
    ]
    for s in statuses:
        eta = "-" if s.state in (DONE, FAILED) else duration(s.eta_s) if s.eta_s is not None else "?"
        line = f"{s.state:9s} {s.run_id:16s} {f'{s.step}/{s.steps}':>13s} {s.attempts:5d} {eta:>7s}  {s.reason}"
        lines.append(line.rstrip())
    return "\n".join(lines)
