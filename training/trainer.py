"""The training loop in two parts: `Trainer(cfg, run_dir)` sets a run up (or picks it up where it stopped), and
`Trainer.run()` steps it: data -> jitted train step -> metrics, hooks and checkpoints.

Periodic work is a hook, `trainer.add_hook(every, fn)`: `fn(step, state)` runs after every `every`-th step and at
the last one, and what it returns (a dict of floats, or None) is logged with that step's metrics. Validation is
the first hook; few-shot evaluation during training is another."""

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
from meshlm.training import faults, recipe
from meshlm.training import run_dir as run_dir_lib
from meshlm.training import setup as setup_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.config import Config
from meshlm.training.data import build_pipeline
from meshlm.training.errors import NonFiniteError
from meshlm.training.metrics import MetricsWriter
from meshlm.training.mfu import device_peak
from meshlm.training.train_step import TrainState, leaf_name

Hook = Callable[[int, TrainState], dict[str, float] | None]
_SKIPPED = "nonfinite_skipped"  # saved with the data-iterator state: a resumed run keeps counting


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    final_step: int
    last_val_loss: float | None


@dataclasses.dataclass(frozen=True)
class _Scheduled:
    every: int
    fn: Hook


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
        self.cfg = cfg = run_dir_lib.resolve_config(self.run_dir, cfg).validate()
        t = cfg.train
        self.log = log if jax.process_index() == 0 else (lambda *_: None)
        # Under a batch ramp the loader yields single micro-batches and a step takes as many as it needs.
        self.accumulation = recipe.as_accumulation(t)
        self.loader_rows = t.batch_size // self.accumulation.micro_batches if recipe.ramps(t) else t.batch_size
        partitioner = Partitioner.build(cfg.mesh)
        check_mesh(
            partitioner.sizes,
            sequence_parallel=cfg.mesh.sequence_parallel,
            model=cfg.model,
            batch_size=t.batch_size,
            micro_batches=self.accumulation.micro_batches,
            seq_len=cfg.seq_len,
            process_count=jax.process_count(),
        )
        # Process 0 writes the tokenizer and data caches into shared folders before the others read them.
        self.pipeline = distributed.first_process_first(
            lambda: build_pipeline(
                cfg.data,
                run_dir=self.run_dir,
                seq_len=cfg.seq_len,
                batch_size=self.loader_rows // jax.process_count(),
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

        self.setup = setup_lib.build(cfg, partitioner)
        self.checkpointer = Checkpointer(self.run_dir / run_dir_lib.CHECKPOINTS, keep=t.keep_checkpoints)
        self.state, data_state = self.setup.restore_or_init(self.checkpointer, log=self.log)
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

    def add_hook(self, every: int, fn: Hook) -> None:
        """Call fn(step, state) after every `every`-th step and after the last; log what it returns."""
        if every <= 0:
            raise ConfigError(f"a hook's interval must be positive, got every={every}")
        self.hooks.append(_Scheduled(every, fn))

    def _validate(self, step: int, state: TrainState) -> dict[str, float]:
        t = self.cfg.train
        if self._val_batches is None:
            local = self.pipeline.val_batches(t.eval_batches)
            self._val_batches = [self.setup.partitioner.global_batch(b, self.loader_rows) for b in local]
        total, count = 0.0, 0.0
        for batch in self._val_batches:
            loss_sum, tokens = self.setup.eval_step(state.params, batch)
            total, count = total + float(loss_sum), count + float(tokens)
        self.last_val_loss = total / max(count, 1.0)
        return {"val_loss": self.last_val_loss}

    def run(self, stop_after: int | None = None, progress: bool = True) -> TrainResult:
        """Train to the run's last step (train.steps, or the steps train.tokens takes), or `stop_after` more."""
        cfg, t, setup, plan = self.cfg, self.cfg.train, self.setup, self.setup.plan
        start, total = int(self.state.step), plan.total_steps
        writer = MetricsWriter(self.run_dir, start)
        model_flops_per_token = flops_per_token(cfg.model, cfg.seq_len).total
        peak, peak_source = device_peak(setup.partitioner.mesh.devices.flat)
        n_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.log(
            f"{cfg.preset or 'model'}: {n_params:,} params, {t.batch_size} x {cfg.seq_len} tokens per step"
            + (f" after a ramp from {plan.batch_size_at(0)} over {t.ramp_tokens:,} tokens" if plan.ramps else "")
            + f", {total:,} steps, "
            f"peak {peak:.3g} FLOP/s ({peak_source}), mesh {setup.partitioner.sizes} on "
            f"{setup.partitioner.mesh.size} of {jax.device_count()} devices, {jax.process_count()} process(es)"
        )
        end = total if stop_after is None else min(total, start + stop_after)
        bar = _progress_bar(start, total, progress)
        state, window_start, window_steps, window_tokens = self.state, time.perf_counter(), 0, 0
        unchecked = None  # the previous call's health, checked after the next call is dispatched
        lengths_run = set()  # steps per call seen so far: the first call of each length compiles
        step = start
        while step < end:
            call_start, done = time.perf_counter(), step + self._call_length(step, end, total)
            local = [self._next_batch(s) for s in range(step, done)]
            if done - step == 1:
                state, metrics = setup.train_step(state, setup.partitioner.global_batch(local[0], t.batch_size))
            else:
                stacked = {k: np.stack([b[k] for b in local]) for k in local[0]}
                batches = setup.partitioner.global_batch(stacked, t.batch_size, stacked=True)
                state, metrics = setup.train_steps(state, batches)
            for d in range(step + 1, done + 1):
                faults.kill_point("step", d)
            if unchecked is not None:
                self._check_finite(*unchecked, params=state.params)
            health = (step + 1, metrics.pop("finite"), metrics.pop("grad_finite"), metrics["loss"])
            if done - step > 1:
                metrics = {k: v[-1] for k, v in metrics.items()}  # the record is the call's last step's
            due, save, log = self._due_after(done, end, total)
            if due or save or log:  # nothing non-finite is logged unflagged,
                self._check_finite(*health, params=state.params)  # reaches a hook or is saved
                unchecked = None
            else:
                unchecked = health
            call_tokens = sum(plan.batch_size_at(s) for s in range(step, done)) * cfg.seq_len
            if done - step not in lengths_run:  # a compiling call: keep it out of the throughput figures
                lengths_run.add(done - step)
                jax.block_until_ready(metrics)
                window_start = time.perf_counter()
                compiling_call = (window_start - call_start, done - step, call_tokens)
            else:
                window_steps += done - step
                window_tokens += call_tokens
            record = {}
            if log:
                record = {k: float(v) for k, v in metrics.items()}  # blocks until the step is finished
                elapsed, steps_timed, tokens = time.perf_counter() - window_start, window_steps, window_tokens
                if not steps_timed:  # only a compiling call since the last record: it stands for itself
                    elapsed, steps_timed, tokens = compiling_call
                tokens_per_s = tokens / elapsed
                record.update(
                    step_time=elapsed / steps_timed,
                    tokens_per_s=tokens_per_s,
                    mfu=model_flops_per_token * tokens_per_s / peak,
                    batch_size=plan.batch_size_at(done - 1),
                    tokens_seen=plan.tokens_at(done),
                )
                if t.nonfinite == "skip":
                    record["nonfinite_skipped"] = self.nonfinite_skipped
                window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
            for hook in due:
                record.update(hook.fn(done, state) or {})
            if due:
                window_start = time.perf_counter()  # hook time is not training time
            if record:
                writer.write(done, record)
                self._report(done, record, bar)
                faults.kill_point("metrics", done)
            if bar is not None:
                bar.update(done - step)
            if save:
                data_state = {**self.train_iter.get_state(), _SKIPPED: self.nonfinite_skipped}
                self.checkpointer.save(state, data_state, done)
                faults.kill_point("checkpoint", done)
            step = done
        self.checkpointer.wait()
        self.checkpointer.close()
        writer.close()
        if bar is not None:
            bar.close()
        self.state = state
        return TrainResult(state, end, self.last_val_loss)

    def _due_after(self, done: int, end: int, total: int) -> tuple[list[_Scheduled], bool, bool]:
        """(hooks to run, save?, log?) once step `done` is trained."""
        t = self.cfg.train
        hooks = [h for h in self.hooks if done % h.every == 0 or done == total]
        return hooks, done % t.checkpoint_every == 0 or done == end, done % t.log_every == 0 or done == end

    def _call_length(self, step: int, end: int, total: int) -> int:
        """Steps the next call runs: train.steps_per_call, cut short after the first step that anything is due
        after, so it sees the state of exactly that step."""
        n = 1
        while n < self.cfg.train.steps_per_call and not any(self._due_after(step + n, end, total)):
            n += 1
        return n

    def _next_batch(self, step: int) -> dict:
        """This process's rows of step `step`'s batch. Under a ramp: the step's micro-batches, the unused ones zero
        (never read: the step loops over the first n only), interleaved so micro-batch m is rows m, m + M, ...
        as the train step's gradient accumulation takes them."""
        if not self.setup.plan.ramps:
            return next(self.train_iter)
        M = self.accumulation.micro_batches
        n = self.setup.plan.chunks_at(step) * self.cfg.train.micro_batches
        micros = [next(self.train_iter) for _ in range(n)]
        micros += [jax.tree.map(np.zeros_like, micros[0])] * (M - n)
        return {k: np.stack([m[k] for m in micros], axis=1).reshape((-1,) + micros[0][k].shape[1:]) for k in micros[0]}

    def _check_finite(self, first: int, finite, grad_finite, loss, params) -> None:
        """Count skipped batches, or stop with the step, the parameters at fault and the last good checkpoint. The
        flags are one call's: of step `first`, or stacked for the steps from `first` on."""
        finite = np.atleast_1d(jax.device_get(finite))
        if finite.all():
            return
        if self.cfg.train.nonfinite == "skip":
            self.nonfinite_skipped += int((~finite).sum())
            return
        row = int(np.argmin(finite))
        step, loss = first + row, np.atleast_1d(jax.device_get(loss))[row]
        names = [leaf_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        flags = np.asarray(jax.device_get(grad_finite)).reshape(len(finite), -1)[row]
        bad = [n for n, ok in zip(names, flags) if not ok]
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
