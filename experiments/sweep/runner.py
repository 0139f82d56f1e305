"""The sweep driver: plan, prepare the data once, then keep the launcher's slots busy with claimed runs.

DIR/results.sqlite   the store (store.py); only this driver writes it
DIR/data/HASH/       the sweep's tokenizer and the training split's token count, made once per data config
DIR/jax-cache/       compiled programs shared between runs (meshlm sweep run)
DIR/runs/ID/         one ordinary `meshlm train` run directory per run (config.json, checkpoints, metrics.jsonl)
"""

import dataclasses
import functools
import hashlib
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable

from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import tune as tune_lib
from meshlm.experiments.sweep.launchers import Job, Launcher
from meshlm.experiments.sweep.spec import Spec
from meshlm.experiments.sweep.store import RETRYING, RunResult, Store
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training.atomic import write_atomic
from meshlm.training.checkpoint import has_step
from meshlm.training.data import build_pipeline
from meshlm.training.errors import DataError
from meshlm.training.run_dir import CHECKPOINTS
from meshlm.training.train_config import TrackerConfig

RUNS = "runs"
DATA = "data"
COMPILE_CACHE = "jax-cache"
POLL_S = 10.0  # how often a free slot looks for a cooldown branch whose trunk checkpoint has appeared


@dataclasses.dataclass(frozen=True)
class DataStats:
    tokens: float | None  # training-split tokens (with one EOS per document); None when the data is not here
    exact: bool  # False: estimated from the first documents of a large split
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Outcome:
    finished: int  # by this invocation
    skipped: int  # already in the store
    held_elsewhere: int  # claimed by another live runner
    failed: int  # by this invocation: a deterministic failure, or out of retries
    failed_before: int  # recorded failed by an earlier invocation and left alone (retry_failed=False)
    waiting: int = 0  # cooldown branches whose trunk checkpoint is not there yet (trunk failed, or run elsewhere)
    tune_pending: bool = False  # the main runs wait for tune runs that other runners hold


def data_dir(out: pathlib.Path, cfg: config_lib.Config) -> pathlib.Path:
    """DIR/data/HASH: one tokenizer and token count per data config, so an edited spec never reuses a stale one."""
    key = json.dumps(config_lib.to_dict(cfg)["data"], sort_keys=True)
    return out / DATA / hashlib.sha256(key.encode()).hexdigest()[:12]


def data_stats(spec: Spec, out: pathlib.Path, runs: list[plan_lib.PlannedRun], sample_docs: int = 2000) -> DataStats:
    """Train the sweep's tokenizer into its data directory (once) and count the training split's tokens (cached)."""
    directory = data_dir(out, runs[0].config)
    cache = directory / "stats.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        return DataStats(saved["tokens"], saved["exact"])
    try:
        pipeline = build_pipeline(runs[0].config.data, directory, spec.seq_len, batch_size=1, seed=0)
    except DataError as e:
        return DataStats(None, False, note=str(e))
    docs = pipeline.splits["train"]
    n = len(docs) if len(docs) <= sample_docs else sample_docs
    counted = sum(len(pipeline.tokenizer.encode(docs[i])) + 1 for i in range(n))
    stats = DataStats(counted * len(docs) / n, n == len(docs))
    write_atomic(cache, json.dumps({"tokens": stats.tokens, "exact": stats.exact}))
    return stats


def check_epochs(spec: Spec, runs: list[plan_lib.PlannedRun], stats: DataStats) -> None:
    if stats.tokens is None:
        return
    for r in runs:
        epochs = r.accounting.tokens / stats.tokens
        if epochs > spec.max_epochs:
            raise ConfigError(
                f"run {r.run_id} (d_model={r.config.model.d_model}, {r.budget:.3g} FLOPs) would read {epochs:.2f} "
                f"epochs of the {stats.tokens:.3g}-token training split (max_epochs={spec.max_epochs}); use a larger "
                "model or a smaller budget for it, more data, or raise max_epochs"
            )


def estimate_seconds(spec: Spec, run: plan_lib.PlannedRun, measured: list[tuple[int, float]]) -> float:
    """Training plus evaluation FLOPs over a FLOP/s figure: measured on this DIR's finished runs of the same width
    when there are some, else the spec's table."""
    cfg = run.config
    evals = (cfg.train.steps - run.branch_step) // cfg.train.eval_every + 1
    eval_flops = run.accounting.flops_per_token / 3.0 * spec.eval.sequences * cfg.seq_len * evals
    same_width = sorted(f for d, f in measured if d == cfg.model.d_model)
    if same_width:
        rate = same_width[len(same_width) // 2]
        return (run.trained_compute + eval_flops) / rate  # measured over whole attempts: overheads included
    rate = next(
        (f for width, f in spec.estimate.flops_per_s if cfg.model.d_model <= width), spec.estimate.flops_per_s[-1][1]
    )
    return (run.trained_compute + eval_flops) / rate + spec.estimate.overhead_s


def code_revision() -> str:
    source = pathlib.Path(__file__).resolve().parent
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"meshlm {version('meshlm')}"


def dry_run_plan(spec: Spec, store: Store | None) -> tuple[list[plan_lib.PlannedRun], list[plan_lib.PlannedRun], str]:
    """(tune runs, main runs, where the main runs' peak LR comes from) for --dry-run: the main runs at the tune
    stage's fit once every tune run in the store has ended, else at the rules (provisional)."""
    tune_runs = plan_lib.resolve_tune(spec)
    fitted = tune_lib.fit_stage(spec, tune_runs, store) if tune_runs and store else None
    if fitted and fitted.rules:
        lr = fitted.rules.lr
        return tune_runs, plan_lib.resolve(spec, fitted.rules), f"tuned: LR*(N) = {lr.k:.3g} N^{lr.p:.3f}"
    why = "the tune stage identified no size" if fitted else "until the tune stage has run"
    main_lr = f"rules.lr {why}: provisional, their ids change once it is fitted" if tune_runs else ""
    return tune_runs, plan_lib.resolve(spec), main_lr


def print_plan(
    spec: Spec,
    runs: list[plan_lib.PlannedRun],
    stats: DataStats,
    store: Store | None,
    out=None,
    tune_runs: list[plan_lib.PlannedRun] = (),
    main_lr: str = "",
):
    """The plan as a table: the tune stage's runs apart, first, then the main runs, whose peak LR `main_lr` says
    where it comes from."""
    out = out or sys.stdout
    measured = store.measured_flops_per_s() if store else []
    done = store.finished() if store else set()
    every = [*tune_runs, *runs]
    parts = plan_lib.flops_by_part(every)
    print(
        f"sweep {spec.name}: {len(every)} runs, {sum(r.trained_compute for r in every):.3g} FLOPs to train"
        + f" (fitted grid {parts['fitted']:.3g}, hold-outs {parts['holdout']:.3g}"
        + (f", {len(tune_runs)} tune runs {parts['tune']:.3g})" if tune_runs else ")")
        + ", data "
        + (
            f"{stats.tokens:.3g} training tokens{'' if stats.exact else ' (estimated)'}"
            if stats.tokens
            else f"not available here ({stats.note.splitlines()[0] if stats.note else 'unknown'})"
        ),
        file=out,
    )
    total = 0.0
    if tune_runs:
        tuned = "peak LR and batch" if spec.tune.batch_grid else "peak LR"
        print(f"tune stage, first (its fit, {tune_lib.FILE}, sets the main runs' {tuned}):", file=out)
        total += _print_runs(spec, tune_runs, stats, measured, done, out)
        print(f"main runs ({main_lr}):", file=out)
    total += _print_runs(spec, runs, stats, measured, done, out)
    source = "measured FLOP/s of finished runs where there are some, else the spec's estimate table"
    print(f"estimated time left: {duration(total)} with one run at a time ({source})", file=out)


def _print_runs(spec: Spec, runs: list[plan_lib.PlannedRun], stats: DataStats, measured, done: set[str], out) -> float:
    """One line per run under a header; returns the estimated seconds of those not done."""
    header = (
        f"{'run':16s} {'budget':>8s} {'d x L':>8s} {'N_flops':>9s} {'N_total':>9s} {'N_nonemb':>9s} "
        f"{'tokens':>9s} {'tok/N':>6s} {'C':>9s} {'steps':>6s} {'batch':>5s} {'lr':>8s} {'epochs':>6s} "
        f"{'est':>6s}  tag"
    )
    print(header, file=out)
    total = 0.0
    for r in runs:
        a, cfg = r.accounting, r.config
        seconds = 0.0 if r.run_id in done else estimate_seconds(spec, r, measured)
        total += seconds
        epochs = f"{a.tokens / stats.tokens:6.2f}" if stats.tokens else f"{'?':>6s}"
        tags = ["holdout"] * r.holdout + ["done"] * (r.run_id in done) + [f"seed={cfg.train.seed}"]
        tags += [r.kind] * (r.kind != plan_lib.RUN) + [f"from {r.parent} at step {r.branch_step}"] * bool(r.parent)
        print(
            f"{r.run_id:16s} {r.budget:8.2g} {cfg.model.d_model:>4d}x{cfg.model.n_layers:<3d} {a.params_flops:9.3g} "
            f"{a.params_total:9.3g} {a.params_non_embedding:9.3g} {a.tokens:9.3g} {a.tokens / a.params_flops:6.1f} "
            f"{a.compute:9.3g} {cfg.train.steps:6d} {cfg.train.batch_size:5d} {cfg.train.optimizer.peak_lr:8.2e} "
            f"{epochs} {duration(seconds):>6s}  {' '.join(tags)}",
            file=out,
        )
    return total


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f}m" if seconds >= 60 else f"{seconds:.0f}s"


def run_sweep(
    spec: Spec,
    out: pathlib.Path,
    launcher: Launcher,
    progress: bool = True,
    compile_cache: bool = False,
    log=print,
    tracker: TrackerConfig | None = None,
    retry_failed: bool = False,
    clock=time.monotonic,
    sleep=time.sleep,
) -> Outcome:
    """Run every planned run that is neither finished nor held by another live runner; resumable at any point.
    A killed or crashed run is retried (spec.retries, with backoff) from its checkpoint; one that failed
    deterministically, or ran out of retries, is recorded failed and left alone until retry_failed=True.
    Under a `tune:` section the tune stage runs first; its fit (DIR/tune.json) sets the main runs' peak LR (and
    batch), so the main runs are planned only once every tune run has ended.

    tracker: where every run logs (None: as the spec says); W&B groups the runs under the sweep's name.

    compile_cache: share compiled programs between runs through DIR/jax-cache (a process-wide JAX setting).
    clock, sleep: the time the backoff is measured and waited in (tests pass a fake one)."""
    out = pathlib.Path(out)
    if tracker is not None:  # W&B shows the sweep's runs as one group
        tracker = dataclasses.replace(tracker, group=tracker.group or spec.name)
    tune_runs = plan_lib.resolve_tune(spec)
    runs = plan_lib.resolve(spec)  # under a tune stage, provisional: for the data and the epoch check only
    stats = data_stats(spec, out, runs)
    if stats.tokens is None:
        raise ConfigError(stats.note)
    check_epochs(spec, tune_runs + runs, stats)
    store = Store(out)
    store.set_meta(f"spec:{spec.name}", dataclasses.asdict(spec))  # for the report: the rules behind the runs
    if retry_failed:
        store.reset_failed()
    jobs = functools.partial(_job, out=out, compile_cache=compile_cache, tracker=tracker)
    driver = _Driver(spec, out, store, launcher, jobs, progress, clock, sleep, stats.tokens)
    note = ""
    try:
        tally = driver.run(tune_runs)
        if tune_runs:
            runs, note = _tuned_runs(spec, out, tune_runs, store, log)
            check_epochs(spec, runs, stats)
        tally += driver.run(runs)
    finally:
        launcher.close()
        driver.release()
        store.close()
    trunks = ", ".join(sorted({r.parent for r in tally.waiting}))
    outcome = Outcome(
        finished=tally.finished,
        skipped=tally.skipped,
        held_elsewhere=tally.held,
        failed=tally.failed,
        failed_before=tally.failed_before,
        waiting=len(tally.waiting),
        tune_pending=bool(tune_runs) and not runs,
    )
    log(
        f"sweep {spec.name}: {outcome.finished} runs finished now, {outcome.skipped} already done, "
        f"{outcome.held_elsewhere} held by other runners, {outcome.failed} failed"
        + (f", {outcome.failed_before} failed before (--retry-failed runs them)" if outcome.failed_before else "")
        + (f", {outcome.waiting} cooldown branches wait for trunks {trunks} (re-run once trained)" if trunks else "")
        + (f"; {note}" if note else "")
        + f"; results in {out / 'results.sqlite'}"
    )
    return outcome


def _tuned_runs(
    spec: Spec, out: pathlib.Path, tune_runs: list[plan_lib.PlannedRun], store: Store, log
) -> tuple[list[plan_lib.PlannedRun], str]:
    """The main runs at the tune stage's fitted rules, once it has ended ([] before), and a line on the fit."""
    fitted = tune_lib.fit_stage(spec, tune_runs, store)
    if fitted is None:
        return [], "the main runs wait for the tune stage, whose runs other runners hold (re-run once they finish)"
    path = tune_lib.write(out, fitted)
    for s in fitted.shapes:
        if s.reason:
            log(f"tune: {s.d_model}x{s.n_layers} (N={s.N:.3g}) is not identified, left out of LR*(N): {s.reason}")
    if fitted.rules is None:
        raise ConfigError(
            f"the tune stage identified no size's LR* (every U-curve's minimum is off its grid; {path}); move or "
            "widen tune.lr_grid and re-run: finished tune runs are kept"
        )
    runs = plan_lib.resolve(spec, fitted.rules)
    return runs, tune_lib.summary(fitted, runs) + f" ({path})"


@dataclasses.dataclass
class _Tally:
    finished: int = 0  # by this invocation
    skipped: int = 0  # already in the store
    held: int = 0  # claimed by another live runner
    failed: int = 0  # by this invocation
    failed_before: int = 0  # recorded failed by an earlier invocation
    waiting: list = dataclasses.field(default_factory=list)  # cooldown branches whose trunk checkpoint is not there

    def __add__(self, other: "_Tally") -> "_Tally":
        return _Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


class _Driver:
    """Runs a list of planned runs (a stage) to its end on one launcher: claims, launches, records, retries. The
    claims it holds last across stages; release() gives them back once the launcher is closed."""

    def __init__(
        self,
        spec: Spec,
        out: pathlib.Path,
        store: Store,
        launcher: Launcher,
        job,
        progress: bool,
        clock,
        sleep,
        data_tokens: float | None,
    ):
        self.spec, self.out, self.store, self.launcher, self.job = spec, out, store, launcher, job
        self.progress, self.clock, self.sleep, self.data_tokens = progress, clock, sleep, data_tokens
        self.revision = code_revision()
        self.mine: set[str] = set()  # claimed by this runner: running, or waiting for a retry

    def release(self) -> None:
        for run_id in self.mine:
            self.store.release(run_id)

    def run(self, runs: list[plan_lib.PlannedRun]) -> _Tally:
        if not runs:
            return _Tally()
        store, launcher, clock = self.store, self.launcher, self.clock
        store.add_plan(self.spec.name, runs, self.data_tokens)
        done, failed_before = store.finished(), store.failed()
        todo = [r for r in runs if r.run_id not in done and r.run_id not in failed_before]
        by_id = {r.run_id: r for r in todo}
        trunks = self.out / RUNS
        queue = _Queue(
            todo, ready=lambda run: not run.parent or has_step(trunks / run.parent / CHECKPOINTS, run.branch_step)
        )
        tally = _Tally(
            skipped=sum(r.run_id in done for r in runs), failed_before=sum(r.run_id in failed_before for r in runs)
        )
        in_flight = 0
        bar = _ProgressBar(todo, enabled=self.progress)
        try:
            while True:
                while in_flight < launcher.slots and (run := queue.pop(clock())):
                    if run.run_id not in self.mine and not store.claim(run.run_id):
                        tally.held += run.run_id not in store.finished()
                        bar.skip(run)
                        continue
                    self.mine.add(run.run_id)
                    launcher.submit(self.job(run, attempt=store.start_attempt(run.run_id)))
                    in_flight += 1
                    bar.started()
                wait_s = queue.wait_s(clock())
                if not in_flight:
                    if wait_s is None:  # done, or only branches whose trunk no run here can train are left
                        break
                    self.sleep(wait_s)
                    continue
                if queue.waiting() and in_flight < launcher.slots:  # a trunk in flight may write a branch's step
                    wait_s = POLL_S if wait_s is None else min(POLL_S, wait_s)
                ended = launcher.wait(timeout=wait_s)
                if ended is None:  # a retry is due, or a look for branches whose trunk checkpoint has appeared
                    continue
                job, result = ended
                in_flight -= 1
                self._record(by_id[job.run_id], job, result, queue, bar, tally)
        finally:
            bar.close()
        tally.waiting = queue.waiting()
        return tally

    def _record(self, run: plan_lib.PlannedRun, job: Job, result, queue: "_Queue", bar, tally: _Tally) -> None:
        """A run's try has ended: store its result, or its failure and what comes next (a retry, or failed)."""
        if isinstance(result, RunResult):
            self.store.record_result(job.run_id, result, self.revision)
            self.mine.discard(job.run_id)
            tally.finished += 1
            bar.finished(run, _summary(run, result))
            return
        state = self.store.record_failure(job.run_id, result, self.spec.retries)
        if state.state == RETRYING:
            delay = backoff_s(self.spec, state.failures)
            queue.retry(run, self.clock() + delay)
            bar.retrying(
                f"{job.run_id} try {job.attempt} failed ({result.reason}); "
                f"retry {state.failures} of {self.spec.retries} in {duration(delay)}"
            )
        else:
            self.mine.discard(job.run_id)
            tally.failed += 1
            bar.finished(run, f"{job.run_id} FAILED on try {job.attempt}: {result.reason}")


def backoff_s(spec: Spec, failures: int) -> float:
    """The wait before retry number `failures` (1 is the first): retry_backoff_s, doubling, at most the cap."""
    return min(spec.retry_backoff_s * 2 ** (failures - 1), spec.retry_backoff_max_s)


class _Queue:
    """Runs to start: retries whose backoff is over first (a run half done finishes sooner), then new runs once they
    are `ready` (a cooldown branch: when its trunk's checkpoint is there)."""

    def __init__(self, runs: list[plan_lib.PlannedRun], ready: Callable[[plan_lib.PlannedRun], bool]):
        self._new = list(runs)
        self._retries: dict[str, tuple[float, plan_lib.PlannedRun]] = {}
        self._ready = ready

    def pop(self, now: float) -> plan_lib.PlannedRun | None:
        due = min(((at, run_id) for run_id, (at, _) in self._retries.items() if at <= now), default=None)
        if due:
            return self._retries.pop(due[1])[1]
        run = next((r for r in self._new if self._ready(r)), None)
        if run is not None:
            self._new.remove(run)
        return run

    def waiting(self) -> list[plan_lib.PlannedRun]:
        """New runs that are not ready yet."""
        return [r for r in self._new if not self._ready(r)]

    def retry(self, run: plan_lib.PlannedRun, at: float) -> None:
        self._retries[run.run_id] = (at, run)

    def wait_s(self, now: float) -> float | None:
        """Seconds until the next retry is due; None when no run waits for one."""
        return max(0.0, min(at for at, _ in self._retries.values()) - now) if self._retries else None


def _job(
    run: plan_lib.PlannedRun, out: pathlib.Path, compile_cache: bool, tracker: TrackerConfig | None, attempt: int
) -> Job:
    cfg = run.config
    if tracker is not None:  # set after planning: where a run logs is no part of its id
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tracker=tracker))
    return Job(
        run_id=run.run_id,
        config=config_lib.to_dict(cfg),
        run_dir=str((out / RUNS / run.run_id).resolve()),
        tokenizer=str((data_dir(out, run.config) / "tokenizer.model").resolve()),
        compile_cache=str((out / COMPILE_CACHE).resolve()) if compile_cache else "",
        attempt=attempt,
        branch_from=str((out / RUNS / run.parent).resolve()) if run.parent else "",
        branch_step=run.branch_step,
    )


def _summary(run: plan_lib.PlannedRun, result: RunResult) -> str:
    m, a = run.config.model, run.accounting
    tune = f" tune lr {run.config.train.optimizer.peak_lr:.3g}" if run.kind == plan_lib.TUNE else ""
    return (
        f"{run.run_id} {m.d_model}x{m.n_layers} N={a.params_flops:.3g} D={a.tokens:.3g} C={a.compute:.3g}{tune}"
        f"{' holdout' if run.holdout else ''}: val_loss {result.final_val_loss:.4f} in {result.wall_time_s:.0f}s"
        + (f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step else "")
    )


class _ProgressBar:
    """Runs done / running / left, with an ETA from compute done per second (runs differ in cost, FLOPs do not)."""

    def __init__(self, todo: list[plan_lib.PlannedRun], enabled: bool):
        from tqdm import tqdm

        self.done = self.running = 0
        self.left = len(todo)
        self._bar = tqdm(
            total=sum(r.trained_compute for r in todo),
            unit="FLOP",
            unit_scale=True,
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="{desc} |{bar}| {n:.3g}/{total:.3g} FLOPs [{elapsed}<{remaining}]",
        )
        self._describe()

    def _describe(self) -> None:
        self._bar.set_description_str(f"runs: {self.done} done, {self.running} running, {self.left} left")

    def started(self) -> None:
        self.running += 1
        self.left -= 1
        self._describe()

    def skip(self, run: plan_lib.PlannedRun) -> None:
        self.left -= 1
        self._bar.total -= run.trained_compute
        self._describe()

    def finished(self, run: plan_lib.PlannedRun, line: str) -> None:
        self.running -= 1
        self.done += 1
        self._bar.write(line)
        self._bar.update(run.trained_compute)
        self._describe()

    def retrying(self, line: str) -> None:
        """A failed try whose run waits for its retry: left again until it starts."""
        self.running -= 1
        self.left += 1
        self._bar.write(line)
        self._describe()

    def close(self) -> None:
        self._bar.close()
