"""A batch ramp as training runs it (the plan itself is recipe.step_plan's): the loader yields micro-batches of one
shape, the trainer packs a step's into the full batch's slots, and the jitted step loops over the filled ones only,
so the batch grows without a recompile. Without a ramp each piece is plain: whole batches, fixed accumulation."""

import dataclasses
from collections.abc import Callable, Iterator

import jax
import numpy as np

from meshlm.training import recipe
from meshlm.training.train_config import TrainConfig


@dataclasses.dataclass(frozen=True)
class BatchRamp:
    plan: recipe.StepPlan  # the run's length in steps and each step's batch
    chunk_micro_batches: int  # train.micro_batches: the pieces each chunk is accumulated in
    accumulation: TrainConfig  # a full-batch step as plain accumulation: the config the train step is made for

    @property
    def ramps(self) -> bool:
        return self.plan.ramps

    @property
    def loader_rows(self) -> int:
        """Sequences the loader yields at a time, over all processes: a micro-batch under a ramp, else a batch."""
        t = self.accumulation
        return t.batch_size // t.micro_batches if self.ramps else t.batch_size

    @property
    def micro_batches_at(self) -> Callable[[jax.Array], jax.Array] | None:
        """For the train step: the micro-batches that hold data at a (traced) step; None without a ramp."""
        if not self.ramps:
            return None
        return lambda step: self.plan.chunks_at_traced(step) * self.chunk_micro_batches

    def step_batch(self, step: int, loader: Iterator[dict]) -> dict:
        """This process's rows of step `step`'s batch. Under a ramp: the step's micro-batches, the unused ones zero
        (never read: the step loops over the first n only), interleaved so micro-batch m is rows m, m + M, ...
        as the train step's gradient accumulation takes them."""
        if not self.ramps:
            return next(loader)
        M = self.accumulation.micro_batches
        n = self.plan.chunks_at(step) * self.chunk_micro_batches
        micros = [next(loader) for _ in range(n)]
        micros += [jax.tree.map(np.zeros_like, micros[0])] * (M - n)
        return {k: np.stack([m[k] for m in micros], axis=1).reshape((-1,) + micros[0][k].shape[1:]) for k in micros[0]}


def of(train: TrainConfig, seq_len: int) -> BatchRamp:
    return BatchRamp(recipe.step_plan(train, seq_len), train.micro_batches, recipe.as_accumulation(train))
