"""The training loop in two parts: `Trainer(cfg, run_dir)` sets a run up (or picks it up where it stopped), and
`Trainer.run()` steps it: data -> jitted train step -> metrics, hooks and checkpoints.

Periodic work is a hook, `trainer.add_hook(every, fn)`: `fn(step, state)` runs after every `every`-th step and at
the last one, and what it returns (a dict of floats, or None) is logged with that step's metrics. Validation is
the first hook; few-shot evaluation during training is another."""

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
from etils import epath

from meshlm.model.errors import ConfigError
from meshlm.model.flops import flops_per_token
from meshlm.parallel import distributed
from meshlm.parallel.checks import check_mesh
from meshlm.parallel.sharding import Partitioner
from meshlm.training import faults, goodput, memory_check, preemption, profile
from meshlm.training import run_dir as run_dir_lib
from meshlm.training import setup as setup_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.config import Config
from meshlm.training.data import build_pipeline
from meshlm.training.errors import NonFiniteError
from meshlm.training.metrics import MetricsWriter
from meshlm.training.mfu import device_peak
from meshlm.training.recipe import StepPlan
from meshlm.training.trackers import open_tracker
from meshlm.training.train_step import TrainState, leaf_name

Hook = Callable[[int, TrainState], dict[str, float] | None]
_SKIPPED = "nonfinite_skipped"  # saved with the data-iterator state: a resumed run keeps counting


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    start_step: int  # where this run started: 0, or the step of the checkpoint it resumed from
    final_step: int
    last_val_loss: float | None


@dataclasses.dataclass(frozen=True)
class _Scheduled:
    every: int  # after every `every`-th step and the last; 0: only at the steps in `at`
    fn: Hook
    at: frozenset[int] = frozenset()

    def due(self, done: int, total: int) -> bool:
        return done in self.at or (self.every > 0 and (done % self.every == 0 or done == total))


@dataclasses.dataclass(frozen=True)
class _Due:
    """What is due once a step is trained. Each reads that step's state, so a call of several steps ends there."""

    hooks: list[_Scheduled]
    save: bool
    log: bool

    @property
    def anything(self) -> bool:
        return bool(self.hooks) or self.save or self.log


@dataclasses.dataclass(frozen=True)
class _FiniteFlags:
    """One call's health, still on the device: of step `first_step`, or stacked for the steps from it on."""

    first_step: int
    finite: jax.Array
    grad_finite: jax.Array  # one flag per parameter (and step), for the diagnosis
    loss: jax.Array


@dataclasses.dataclass(frozen=True)
class _Timed:
    seconds: float
    steps: int
    tokens: int


@dataclasses.dataclass
class _Throughput:
    """The calls since the last record, timed. The first call of each length compiles: it is kept out, and stands
    for itself in a record that follows only such calls."""

    plan: StepPlan
    flops_per_token: float
    peak: float  # the devices' FLOP/s
    start: float
    steps: int = 0
    tokens: int = 0
    lengths_run: set[int] = dataclasses.field(default_factory=set)
    compiling_call: _Timed | None = None

    def add(self, call_start: float, step: int, done: int, metrics: dict) -> float:
        """The call that trained steps step + 1 .. done, started at `call_start`; `metrics` are its outputs.
        Returns the call's seconds if it compiled, else 0."""
        steps, tokens = done - step, self.plan.tokens_at(done) - self.plan.tokens_at(step)
        if steps in self.lengths_run:
            self.steps, self.tokens = self.steps + steps, self.tokens + tokens
            return 0.0
        self.lengths_run.add(steps)
        jax.block_until_ready(metrics)
        self.start = time.perf_counter()
        self.compiling_call = _Timed(self.start - call_start, steps, tokens)
        return self.compiling_call.seconds

    def take(self) -> dict[str, float]:
        """Step time, tokens/s and MFU since the last record (call once the step is finished), and a new window."""
        timed = _Timed(time.perf_counter() - self.start, self.steps, self.tokens)
        if not timed.steps:
            timed = self.compiling_call
        tokens_per_s = timed.tokens / timed.seconds
        self.start, self.steps, self.tokens = time.perf_counter(), 0, 0
        return dict(
            step_time=timed.seconds / timed.steps,
            tokens_per_s=tokens_per_s,
            mfu=self.flops_per_token * tokens_per_s / self.peak,
        )

    def leave_out(self, seconds: float) -> None:
        """Time spent inside the window on something other than training."""
        self.start += seconds


class Trainer:
    def __init__(self, cfg: Config | None, run_dir: epath.PathLike, log: Callable[[str], None] = print):
        """Everything the loop needs: config (the saved one when resuming), data, sharded state, steps."""
        self.run_dir = epath.Path(run_dir)
        run_dir_lib.check_directory(self.run_dir)
        # A new run that fails to start leaves the directory as it found it: a stale tokenizer.model left behind
        # would silently be reused by the next, corrected attempt.
        starting = not (self.run_dir / run_dir_lib.CONFIG).exists()
        before = {p.name for p in self.run_dir.iterdir()} if self.run_dir.exists() else None
        try:
            self._setup(cfg, log)
        except BaseException:
            if starting and jax.process_index() == 0:
                _remove_new_entries(self.run_dir, before)
            raise

    def _setup(self, cfg: Config | None, log: Callable[[str], None]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.goodput = goodput.Goodput.open(self.run_dir, writes=jax.process_index() == 0)
        self.cfg = cfg = run_dir_lib.resolve_config(self.run_dir, cfg).validate()
        t = cfg.train
        self.log = log if jax.process_index() == 0 else (lambda *_: None)
        self.setup = setup_lib.build(cfg, Partitioner.build(cfg.mesh))
        partitioner, ramp = self.setup.partitioner, self.setup.ramp
        check_mesh(
            partitioner.sizes,
            sequence_parallel=cfg.mesh.sequence_parallel,
            model=cfg.model,
            batch_size=t.batch_size,
            micro_batches=ramp.accumulation.micro_batches,
            seq_len=cfg.seq_len,
            process_count=jax.process_count(),
            context_impl=cfg.mesh.context_impl,
        )
        # Process 0 writes the tokenizer and data caches into shared folders before the others read them.
        self.pipeline = distributed.first_process_first(
            lambda: build_pipeline(
                cfg.data,
                run_dir=self.run_dir,
                seq_len=cfg.seq_len,
                batch_size=ramp.loader_rows // jax.process_count(),
                seed=t.seed,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        )
        if self.pipeline.tokenizer.vocab_size > cfg.model.vocab_size:
            raise ConfigError(
                f"the tokenizer has {self.pipeline.tokenizer.vocab_size} tokens but "
                f"model.vocab_size={cfg.model.vocab_size}; raise model.vocab_size"
            )
        run_dir_lib.save_config(self.run_dir, cfg)

        self.checkpointer = Checkpointer(
            self.run_dir / run_dir_lib.CHECKPOINTS, keep=t.keep_checkpoints, keep_steps=t.checkpoint_steps
        )
        restore_began = time.perf_counter()
        self.state, data_state = self.setup.restore_or_init(self.checkpointer, log=self.log)
        if data_state is not None:
            self.goodput.add("checkpoint_restore", time.perf_counter() - restore_began)
        self.goodput.resumed_at(int(self.state.step))
        self.train_iter = self.pipeline.train_iterator()
        self.nonfinite_skipped = 0  # batches skipped for a non-finite loss or gradient (train.nonfinite=skip)
        if data_state is not None:
            self.nonfinite_skipped = data_state.pop(_SKIPPED, 0)
            self.train_iter.set_state(data_state)
            self.log(f"resumed from step {int(self.state.step)} in {self.run_dir}")
        faults.kill_point("setup", int(self.state.step))
        self.hooks: list[_Scheduled] = []
        self.last_val_loss: float | None = None
        self._val_batches: list | None = None  # built on first use: a run that never validates never reads them
        self.add_hook(t.eval_every, self._validate)
        self.profiler = profile.StepProfiler(profile.parse_window(t.profile), self.run_dir)
        self.hooks.append(_Scheduled(0, self.profiler.after_step, at=self.profiler.steps))

    def add_hook(self, every: int, fn: Hook) -> None:
        """Call fn(step, state) after every `every`-th step and after the last; log what it returns."""
        if every <= 0:
            raise ConfigError(f"a hook's interval must be positive, got every={every}")
        self.hooks.append(_Scheduled(every, fn))

    def _validate(self, step: int, state: TrainState) -> dict[str, float]:
        faults.kill_point("eval", step)
        t = self.cfg.train
        if self._val_batches is None:
            local = self.pipeline.val_batches(t.eval_batches)
            rows = self.setup.ramp.loader_rows
            self._val_batches = [self.setup.partitioner.global_batch(b, rows) for b in local]
        total, count = 0.0, 0.0
        for batch in self._val_batches:
            loss_sum, tokens = self.setup.eval_step(state.params, batch)
            total, count = total + float(loss_sum), count + float(tokens)
        self.last_val_loss = total / max(count, 1.0)
        return {"val_loss": self.last_val_loss}

    def run(self, stop_after: int | None = None, progress: bool = True) -> TrainResult:
        """Train to the run's last step (train.steps, or the steps train.tokens takes), or `stop_after` more. After a
        SIGTERM or SIGINT every process saves one agreed step and stops there: Preempted (training/preemption.py)."""
        with preemption.StopSignals() as self._stop:
            result = self._loop(stop_after, progress)
        if self._stop.stopped_at is not None:
            raise self._stop.preempted(self.checkpointer.directory)
        return result

    def _loop(self, stop_after: int | None, progress: bool) -> TrainResult:
        start, total = int(self.state.step), self.setup.plan.total_steps
        tracked = self.cfg.train.tracker
        tracker = open_tracker(tracked, self.run_dir, dataclasses.asdict(self.cfg), self.log)
        writer = MetricsWriter(self.run_dir, start, tensorboard=tracked.kind == "tensorboard")
        peak = self._announce()
        end = total if stop_after is None else min(total, start + stop_after)
        bar = _progress_bar(start, total, progress)
        per_token = flops_per_token(self.cfg.model, self.cfg.seq_len).total
        clock = _Throughput(self.setup.plan, per_token, peak, time.perf_counter())
        state, step, pending = self.state, start, None
        self.profiler.begin(start)
        self.goodput.loop_started(start)
        memory = None
        while step < end and self._stop.stopped_at is None:
            call_start, done = time.perf_counter(), step + self._call_length(step, end, total)
            waited = self.goodput.session["data_wait"]
            state, metrics, flags = self._train_call(state, step, done)
            for d in range(step + 1, done + 1):
                faults.kill_point("step", d)
            due = self._due_after(done, end, total)
            if done < end and self._stop.agreed(done):  # every process: save this step and stop after it
                due = dataclasses.replace(due, save=True)
            pending = self._check_flags(pending, flags, due, state.params)
            compiled = clock.add(call_start, step, done, metrics)
            if compiled:
                self.goodput.add("compile", compiled - (self.goodput.session["data_wait"] - waited))
            if step == start:
                self.goodput.loader_started()
            record = self._record(done, metrics, clock) if due.log else {}
            if record and memory is None:
                memory = self._check_memory(clock)
                record.update(memory.record())
            record.update(self._run_hooks(due.hooks, done, state, clock))
            if record:
                writer.write(done, record)
                tracker.log(done, record)
                self._report(done, record, bar)
                faults.kill_point("metrics", done)
            if bar is not None:
                bar.update(done - step)
            if due.save:
                self._save(state, done, clock)
            if record or due.save:
                self._record_goodput(done, due.save)
            step = done
        self.profiler.close()
        with self.goodput.timed("checkpoint_save"):
            self.checkpointer.wait()
        self.goodput.record(step, checkpoint=False)
        self.checkpointer.close()
        writer.close()
        tracker.close()
        if bar is not None:
            bar.close()
        self.state = state
        return TrainResult(state, start, end, self.last_val_loss)

    def _announce(self) -> float:
        """Log what the run trains on what; the devices' peak FLOP/s."""
        cfg, t, plan, partitioner = self.cfg, self.cfg.train, self.setup.plan, self.setup.partitioner
        peak, peak_source = device_peak(partitioner.mesh.devices.flat)
        n_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.log(
            f"{cfg.preset or 'model'}: {n_params:,} params, {t.batch_size} x {cfg.seq_len} tokens per step"
            + (f" after a ramp from {plan.batch_size_at(0)} over {t.ramp_tokens:,} tokens" if plan.ramps else "")
            + f", {plan.total_steps:,} steps, "
            f"peak {peak:.3g} FLOP/s ({peak_source}), mesh {partitioner.sizes} on "
            f"{partitioner.mesh.size} of {jax.device_count()} devices, {jax.process_count()} process(es)"
        )
        return peak

    def _due_after(self, done: int, end: int, total: int) -> _Due:
        t = self.cfg.train
        return _Due(
            hooks=[h for h in self.hooks if h.due(done, total)],
            save=done % t.checkpoint_every == 0 or done == end or done in t.checkpoint_steps,
            log=done % t.log_every == 0 or done == end,
        )

    def _call_length(self, step: int, end: int, total: int) -> int:
        """Steps the next call runs: train.steps_per_call, cut short after the first step that anything is due
        after, so it sees the state of exactly that step."""
        n = 1
        while n < self.cfg.train.steps_per_call and not self._due_after(step + n, end, total).anything:
            n += 1
        return n

    def _train_call(self, state: TrainState, step: int, done: int) -> tuple[TrainState, dict, _FiniteFlags]:
        """Steps step + 1 .. done in one call: the state, the last step's metrics and every step's finite flags."""
        setup, rows = self.setup, self.cfg.train.batch_size
        with self.goodput.timed("data_wait"):
            local = [setup.ramp.step_batch(s, self.train_iter) for s in range(step, done)]
        faults.kill_point("compile", done)
        if done - step == 1:
            state, metrics = setup.train_step(state, setup.partitioner.global_batch(local[0], rows))
        else:
            stacked = {k: np.stack([b[k] for b in local]) for k in local[0]}
            state, metrics = setup.train_steps(state, setup.partitioner.global_batch(stacked, rows, stacked=True))
        flags = _FiniteFlags(step + 1, metrics.pop("finite"), metrics.pop("grad_finite"), metrics["loss"])
        if done - step > 1:
            metrics = {k: v[-1] for k, v in metrics.items()}
        return state, metrics, flags

    def _check_flags(self, pending: _FiniteFlags | None, flags: _FiniteFlags, due: _Due, params) -> _FiniteFlags | None:
        """Check the previous call's flags now that this call is dispatched, so the host never waits for them, and
        this call's too if anything is due: nothing non-finite is logged unflagged, reaches a hook or is saved.
        Returns the flags left pending."""
        if pending is not None:
            self._check_finite(pending, params)
        if not due.anything:
            return flags
        self._check_finite(flags, params)
        return None

    def _record(self, done: int, metrics: dict, clock: _Throughput) -> dict[str, float]:
        record = {k: float(v) for k, v in metrics.items()}  # blocks until the step is finished
        plan = self.setup.plan
        record.update(clock.take(), batch_size=plan.batch_size_at(done - 1), tokens_seen=plan.tokens_at(done))
        if self.cfg.train.nonfinite == "skip":
            record["nonfinite_skipped"] = self.nonfinite_skipped
        return record

    def _run_hooks(self, hooks: list[_Scheduled], done: int, state: TrainState, clock: _Throughput) -> dict:
        if not hooks:
            return {}
        jax.block_until_ready(state)  # the steps before the hooks keep their time in the window
        record = {}
        with self._not_training("evaluation", clock):
            for hook in hooks:
                record.update(hook.fn(done, state) or {})
        return record

    @contextlib.contextmanager
    def _not_training(self, cause: str, clock: _Throughput):
        """Time spent on something else than training: left out of the logged step time, counted as badput."""
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            clock.leave_out(seconds)
            self.goodput.add(cause, seconds)

    def _check_memory(self, clock: _Throughput) -> memory_check.MemoryCheck:
        """Peak device memory against the plan, once the first step has run; a warning past 20 %."""
        with self._not_training("compile", clock):
            memory = memory_check.check(self.setup)  # the first call's trace and compiled program, reused
        if warning := memory.warning():
            self.log(warning)
        return memory

    def _record_goodput(self, done: int, saved: bool) -> None:
        self.goodput.record(done, checkpoint=saved)
        if warning := self.goodput.data_wait_warning():
            self.log(warning)

    def _save(self, state: TrainState, done: int, clock: _Throughput) -> None:
        data_state = {**self.train_iter.get_state(), _SKIPPED: self.nonfinite_skipped}
        with self._not_training("checkpoint_save", clock):
            self.checkpointer.save(state, data_state, done)
        faults.kill_point("checkpoint", done)

    def _check_finite(self, flags: _FiniteFlags, params) -> None:
        """Count skipped batches, or stop with the step, the parameters at fault and the last good checkpoint."""
        finite = np.atleast_1d(jax.device_get(flags.finite))
        if finite.all():
            return
        if self.cfg.train.nonfinite == "skip":
            self.nonfinite_skipped += int((~finite).sum())
            return
        row = int(np.argmin(finite))
        step, loss = flags.first_step + row, np.atleast_1d(jax.device_get(flags.loss))[row]
        names = [leaf_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        grad_finite = np.asarray(jax.device_get(flags.grad_finite)).reshape(len(finite), -1)[row]
        bad = [n for n, ok in zip(names, grad_finite) if not ok]
        self.checkpointer.wait()
        last = self.checkpointer.latest_step()
        self.checkpointer.close()
        grads = f"non-finite gradients in {len(bad)} of {len(names)} parameters ({', '.join(bad[:4])}" + (
            ", ...)" if len(bad) > 4 else ")"
        )
        raise NonFiniteError(
            f"step {step}: loss {float(loss)}, "
            + (grads if bad else "all gradients finite")
            + "; last good checkpoint: "
            + (f"step {last} in {self.checkpointer.directory}" if last is not None else "none")
            + "; re-run to resume there with a lower train.optimizer.peak_lr, or --set train.nonfinite=skip to skip "
            "such batches"
        )

    def _report(self, step: int, record: dict[str, float], bar) -> None:
        val = f"{self.last_val_loss:.3f}" if self.last_val_loss else "-"
        if bar is not None and "loss" in record:
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=val, mfu=f"{record['mfu']:.1%}")
        elif "loss" in record:
            self.log(
                f"step {step}/{self.setup.plan.total_steps} loss {record['loss']:.4f}"
                + (f" val_loss {record['val_loss']:.4f}" if "val_loss" in record else "")
                + f" lr {record['lr']:.2e} batch {record['batch_size']:.0f} {record['tokens_per_s']:.0f} tok/s"
                + f" mfu {record['mfu']:.1%}"
            )


def train(
    cfg: Config | None,
    run_dir: epath.PathLike,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    hooks: tuple[tuple[int, Hook], ...] = (),
) -> TrainResult:
    """Set up (or resume) the run in run_dir and train it; `hooks` are (every, fn) pairs added to validation."""
    trainer = Trainer(cfg, run_dir, log=log)
    for every, fn in hooks:
        trainer.add_hook(every, fn)
    return trainer.run(stop_after=stop_after, progress=progress)


def _remove_new_entries(path: epath.Path, before: set[str] | None) -> None:
    """Remove what a failed start created in `path` (all of it if `path` was new: before is None); nothing older."""
    if not path.exists():
        return
    if before is None:
        path.rmtree()
        return
    for entry in path.iterdir():
        if entry.name not in before:
            if entry.is_dir():
                entry.rmtree()
            else:
                entry.unlink()


def _progress_bar(start: int, total: int, enabled: bool):
    if not enabled or jax.process_index() != 0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # deferred: only an interactive run draws a bar

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
