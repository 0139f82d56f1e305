"""A small text corpus, a config that trains on it in seconds, and that config as `--set` flags."""

import dataclasses
import functools
import random

from meshlm.training import config as config_lib


def text_corpus(root) -> str:
    rng = random.Random(0)
    words = "the king queen lord lady sword crown night day love death fair foul heart blood".split()
    for i in range(30):
        lines = [" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(rng.randint(3, 10))]
        (root / f"play{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return f"text:{root}/*.txt"


def small_config(corpus: str, tmp_path, steps: int = 8, **extra) -> config_lib.Config:
    overrides = [
        f"data.source={corpus}",
        "data.vocab_size=300",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.vocab_size=384",
        "model.n_ctx=32",
        "model.n_layers=2",
        "model.d_model=32",
        "model.n_heads=4",
        f"train.steps={steps}",
        "train.batch_size=4",
        "train.seq_len=32",
        "train.log_every=2",
        "train.eval_every=4",
        "train.eval_batches=2",
        "train.checkpoint_every=2",
        "train.optimizer.warmup_steps=2",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return config_lib.from_preset("tiny", overrides)


def overrides_of(cfg: config_lib.Config) -> list[str]:
    """Every field of cfg as KEY=VALUE, so `meshlm train --preset tiny --set ...` rebuilds it exactly."""
    flat = []

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif key != "preset":
                flat.append(f"{prefix}{key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")

    walk("", config_lib.to_dict(cfg))
    return flat


def quiet(*_):
    pass


def tick_train_calls(trainer, clock: list[float], seconds_per_step: float = 10.0) -> None:
    """Make the trainer's train calls move `clock` by seconds_per_step a step, and nothing else move it: a scripted
    clock for the throughput records (patch trainer's `time.perf_counter` to read clock[0])."""

    def ticking(call, steps_of):
        @functools.wraps(call)
        def run(state, batch):
            clock[0] += seconds_per_step * steps_of(batch)
            return call(state, batch)

        return run

    setup = trainer.setup
    trainer.setup = dataclasses.replace(
        setup,
        train_step=ticking(setup.train_step, lambda batch: 1),
        train_steps=ticking(setup.train_steps, lambda batch: batch["inputs"].shape[0]),
    )
