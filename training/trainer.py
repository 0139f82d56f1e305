"""The training loop: data -> jitted train step -> metrics and checkpoints, resumable at any checkpoint."""

import dataclasses
import pathlib
import sys
import time

import jax
from flax import nnx

from meshlm.experiments.config import Config
from meshlm.model.errors import ConfigError
from meshlm.model.flops import flops_per_token
from meshlm.model.generate import SamplingConfig, generate
from meshlm.model.transformer import Transformer
from meshlm.parallel import distributed
from meshlm.parallel.checks import check_mesh
from meshlm.parallel.sharding import Partitioner, model_axes
from meshlm.training import run_dir as run_dir_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.data import build_pipeline
from meshlm.training.metrics import MetricsWriter
from meshlm.training.mfu import device_peak
from meshlm.training.optimizer import learning_rate_schedule, make_optimizer
from meshlm.training.train_step import TrainState, init_state, make_eval_step, make_train_step


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    final_step: int
    last_val_loss: float | None


def train(
    cfg: Config | None, run_dir: pathlib.Path, progress: bool = True, stop_after: int | None = None, log=print
) -> TrainResult:
    """Train until cfg.train.steps (or `stop_after` steps, for tests of resumption), resuming from run_dir."""
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir_lib.resolve_config(run_dir, cfg).validate()
    t = cfg.train
    log = log if jax.process_index() == 0 else (lambda *_: None)
    partitioner = Partitioner.build(cfg.mesh)
    check_mesh(
        partitioner.sizes,
        cfg.mesh.sequence_parallel,
        cfg.model,
        t.batch_size,
        t.micro_batches,
        cfg.seq_len,
        jax.process_count(),
    )
    # Process 0 writes the tokenizer and data caches into shared folders before the others read them.
    pipeline = distributed.first_process_first(
        lambda: build_pipeline(
            cfg.data,
            run_dir,
            cfg.seq_len,
            t.batch_size // jax.process_count(),
            t.seed,
            jax.process_index(),
            jax.process_count(),
        )
    )
    if pipeline.tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"the tokenizer has {pipeline.tokenizer.vocab_size} tokens but model.vocab_size={cfg.model.vocab_size}; raise model.vocab_size"
        )
    run_dir_lib.save_config(run_dir, cfg)

    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg.model, nnx.Rngs(t.seed))))
    optimizer = make_optimizer(t.optimizer, t.steps)
    schedule = learning_rate_schedule(t.optimizer, t.steps)
    # Created directly in its shards: a state larger than one device's memory is never whole anywhere.
    state, state_sharding = partitioner.init(
        lambda: init_state(Transformer(cfg.model, nnx.Rngs(t.seed)), optimizer, t.seed), model_axes(cfg.model)
    )
    train_iter = pipeline.train_iterator()
    checkpointer = Checkpointer(run_dir / run_dir_lib.CHECKPOINTS, keep=t.keep_checkpoints)
    if checkpointer.latest_step() is not None:
        state, data_state = checkpointer.restore(jax.tree.map(_abstract, state))
        train_iter.set_state(data_state)
        log(f"resumed from step {int(state.step)} in {run_dir}")
    start = int(state.step)
    writer = MetricsWriter(run_dir, start)

    batch_sharding = partitioner.batch_sharding(t.batch_size, cfg.seq_len)
    train_step = partitioner.under_rules(
        make_train_step(graphdef, optimizer, schedule, t, cfg.model.dropout > 0, state_sharding, batch_sharding)
    )
    eval_step = partitioner.under_rules(make_eval_step(graphdef))
    val_batches = [partitioner.global_batch(b, t.batch_size) for b in pipeline.val_batches(t.eval_batches)]
    flops_per_step = flops_per_token(cfg.model, cfg.seq_len).total * t.batch_size * cfg.seq_len
    peak, peak_source = device_peak()
    log(
        f"{cfg.preset or 'model'}: {sum(x.size for x in jax.tree.leaves(state.params)):,} params, "
        f"{t.batch_size} x {cfg.seq_len} tokens per step, peak {peak:.3g} FLOP/s ({peak_source}), "
        f"mesh {partitioner.sizes} on {partitioner.mesh.size} of {jax.device_count()} devices, {jax.process_count()} process(es)"
    )

    end = t.steps if stop_after is None else min(t.steps, start + stop_after)
    bar = _progress_bar(start, t.steps, progress)
    last_val, window_start, window_steps = None, time.perf_counter(), 0
    for step in range(start, end):
        batch = partitioner.global_batch(next(train_iter), t.batch_size)
        state, metrics = train_step(state, batch)
        done = step + 1
        if step == start:  # the first step compiles: keep it out of the throughput figures
            jax.block_until_ready(metrics)
            window_start = time.perf_counter()
        else:
            window_steps += 1
        if done % t.log_every == 0 or done == end:
            metrics = {k: float(v) for k, v in metrics.items()}  # blocks until the step is finished
            elapsed = time.perf_counter() - window_start
            step_time = elapsed / max(window_steps, 1)
            metrics.update(
                step_time=step_time,
                tokens_per_s=t.batch_size * cfg.seq_len / step_time,
                mfu=flops_per_step / step_time / peak,
            )
            window_start, window_steps = time.perf_counter(), 0
            if done % t.eval_every == 0 or done == t.steps:
                last_val = _evaluate(eval_step, state.params, val_batches)
                metrics["val_loss"] = last_val
                window_start = time.perf_counter()  # evaluation time is not training time
            writer.write(done, metrics)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{metrics['loss']:.3f}",
                    val=f"{last_val:.3f}" if last_val else "-",
                    mfu=f"{metrics['mfu']:.1%}",
                )
            elif jax.process_index() == 0:
                log(
                    f"step {done}/{t.steps} loss {metrics['loss']:.4f}"
                    + (f" val_loss {last_val:.4f}" if "val_loss" in metrics else "")
                    + f" lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tok/s mfu {metrics['mfu']:.1%}"
                )
        if bar is not None:
            bar.update(1)
        if done % t.checkpoint_every == 0 or done == end:
            checkpointer.save(state, train_iter.get_state(), done)
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    if bar is not None:
        bar.close()
    if end == t.steps and jax.process_count() == 1:  # sampling reads every parameter shard: one process only
        _write_samples(cfg, graphdef, state.params, pipeline.tokenizer, run_dir, log)
    return TrainResult(state, end, last_val)


def _abstract(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _evaluate(eval_step, params, batches) -> float:
    total, count = 0.0, 0.0
    for batch in batches:
        loss_sum, tokens = eval_step(params, batch)
        total, count = total + float(loss_sum), count + float(tokens)
    return total / max(count, 1.0)


def _progress_bar(start: int, total: int, enabled: bool):
    if not enabled or jax.process_index() != 0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _write_samples(cfg: Config, graphdef, params, tokenizer, run_dir: pathlib.Path, log) -> None:
    model = nnx.merge(graphdef, params)
    prompts = ["", "KING.", "To be, or not to be"]
    ids = [([tokenizer.eos_id] + tokenizer.encode(p))[: cfg.model.n_ctx // 2] for p in prompts]
    sampling = SamplingConfig(
        max_new_tokens=min(96, cfg.model.n_ctx - max(map(len, ids))),
        temperature=0.8,
        top_k=50,
        stop_tokens=(tokenizer.eos_id,),
        seed=cfg.train.seed,
        vocab_limit=tokenizer.vocab_size,
    )
    texts = [
        p + tokenizer.decode([i for i in new if i != tokenizer.eos_id])
        for p, new in zip(prompts, generate(model, ids, sampling))
    ]
    (run_dir / "samples.txt").write_text("".join(f"--- sample {i}\n{text}\n" for i, text in enumerate(texts)))
    for text in texts:
        log("--- sample\n" + text)
