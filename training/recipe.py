"""GPT-3's training recipe (Brown et al. 2020, Table 2.1 and Appendix B) and the token clock it runs on:
the batch of every step under a batch ramp, the tokens consumed before it, and the learning rate."""

import bisect
import dataclasses

import jax
import jax.numpy as jnp
import optax

from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.flops import count_params, flops_per_token
from meshlm.training import optimizer as optimizer_lib
from meshlm.training.train_config import OptimizerConfig, TrainConfig

TOTAL_TOKENS = 300_000_000_000  # Table 2.1: every model
WARMUP_TOKENS = 375_000_000  # Appendix B: linear warmup
DECAY_TOKENS = 260_000_000_000  # Appendix B: cosine to 10% of the peak by here, then constant
RAMP_START = 16  # sequences of 2048: the ramp's "small value (32k tokens)", also its increment
PF_DAY = 8.64e19  # FLOPs in a petaflop/s-day (Table D.1)


@dataclasses.dataclass(frozen=True)
class PaperRecipe:
    paper_batch_tokens: float  # Table 2.1 as printed: 0.5M ... 3.2M
    batch_size: int  # the same in sequences of 2048: 0.5M/1M/2M are binary (2^19..2^21 tokens), 3.2M is 1536
    peak_lr: float  # Table 2.1
    ramp_tokens: int  # Appendix B gives 4B-12B "depending on the model size"; see GPT3_RECIPES
    paper_pf_days: float  # Table D.1, total train compute
    paper_flops: float  # Table D.1


# The ramp lengths between Small (4B) and 175B (12B) are ours: 4B + 8B x log(N / 125M) / log(175B / 125M) for the
# paper's parameter count N, rounded to 0.5B. Megatron-LM's GPT-3 175B example ramps over the same 12B tokens.
GPT3_RECIPES = {
    "gpt3-small": PaperRecipe(0.5e6, 256, 6.0e-4, 4_000_000_000, 2.60e0, 2.25e20),
    "gpt3-medium": PaperRecipe(0.5e6, 256, 3.0e-4, 5_000_000_000, 7.42e0, 6.41e20),
    "gpt3-large": PaperRecipe(0.5e6, 256, 2.5e-4, 6_000_000_000, 1.58e1, 1.37e21),
    "gpt3-xl": PaperRecipe(1e6, 512, 2.0e-4, 6_500_000_000, 2.75e1, 2.38e21),
    "gpt3-2.7b": PaperRecipe(1e6, 512, 1.6e-4, 7_500_000_000, 5.52e1, 4.77e21),
    "gpt3-6.7b": PaperRecipe(2e6, 1024, 1.2e-4, 8_500_000_000, 1.39e2, 1.20e22),
    "gpt3-13b": PaperRecipe(2e6, 1024, 1.0e-4, 9_000_000_000, 2.68e2, 2.31e22),
    "gpt3-175b": PaperRecipe(3.2e6, 1536, 0.6e-4, 12_000_000_000, 3.64e3, 3.14e23),
}


def train_config(preset: str) -> TrainConfig | None:
    """The paper's recipe as a preset's training defaults; None for presets the paper did not train."""
    row = GPT3_RECIPES.get(preset.removesuffix("-sparse"))  # the sparse variants trained to the same recipe
    if row is None:
        return None
    # Every Appendix B value is written out, so a changed default elsewhere cannot change the recipe.
    optimizer = OptimizerConfig(
        peak_lr=row.peak_lr,
        schedule="cosine",
        warmup_steps=0,
        warmup_tokens=WARMUP_TOKENS,
        decay_tokens=DECAY_TOKENS,
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        grad_clip=1.0,
    )
    return TrainConfig(
        steps=0,
        tokens=TOTAL_TOKENS,
        batch_size=row.batch_size,
        micro_batches=1,
        ramp_tokens=row.ramp_tokens,
        ramp_batch=RAMP_START,
        eval_every=1000,
        checkpoint_every=1000,
        optimizer=optimizer,
    )


def check(train: TrainConfig) -> None:
    """One-line errors for the run-length, ramp and token-schedule fields."""
    opt = train.optimizer
    for name, value in [("steps", train.steps), ("tokens", train.tokens), ("ramp_tokens", train.ramp_tokens)] + [
        (f"optimizer.{n}", getattr(opt, n)) for n in ("warmup_steps", "warmup_tokens", "decay_tokens")
    ]:
        if value < 0:
            raise ConfigError(f"train.{name}={value} must not be negative")
    if (train.steps > 0) == (train.tokens > 0):
        raise ConfigError(
            f"train.steps={train.steps} and train.tokens={train.tokens}: set exactly one of them (the other 0) "
            "to give the run's length"
        )
    if ramps(train):
        if train.ramp_batch <= 0 or train.batch_size % train.ramp_batch:
            raise ConfigError(
                f"train.batch_size={train.batch_size} is not a multiple of train.ramp_batch={train.ramp_batch}, the "
                "ramp's increment; change one of them or set train.ramp_tokens=0"
            )
        if train.ramp_batch % train.micro_batches:
            raise ConfigError(
                f"train.micro_batches={train.micro_batches} does not divide train.ramp_batch={train.ramp_batch}, the "
                "sequences of each accumulated chunk; pick a divisor"
            )
    if opt.warmup_steps and opt.warmup_tokens:
        raise ConfigError(
            f"train.optimizer.warmup_steps={opt.warmup_steps} and warmup_tokens={opt.warmup_tokens} both set the "
            "warmup; set one of them to 0"
        )
    if opt.decay_tokens and opt.decay_tokens <= opt.warmup_tokens:
        raise ConfigError(
            f"train.optimizer.decay_tokens={opt.decay_tokens} must exceed warmup_tokens={opt.warmup_tokens}; "
            "the decay starts after the warmup"
        )


def ramps(train: TrainConfig) -> bool:
    return train.ramp_tokens > 0 and train.ramp_batch < train.batch_size


def fit_to_mesh(train: TrainConfig, data_parallel: int) -> TrainConfig:
    """The ramp's chunk widened to the smallest that divides the batch and gives every data-parallel device whole
    micro-batches: on a wide mesh the ramp starts at a larger batch; with no such chunk, no ramp."""
    if not ramps(train):
        return train
    unit = data_parallel * train.micro_batches
    fits = [c for c in range(train.ramp_batch, train.batch_size) if c % unit == 0 and train.batch_size % c == 0]
    return dataclasses.replace(train, ramp_batch=fits[0]) if fits else dataclasses.replace(train, ramp_tokens=0)


def as_accumulation(train: TrainConfig) -> TrainConfig:
    """A full-batch step of a ramped run as plain accumulation (its chunks' micro-batches in one count): the
    memory and FLOPs parallel/planner.py models."""
    if not ramps(train):
        return train
    chunks = train.batch_size // train.ramp_batch
    return dataclasses.replace(train, micro_batches=train.micro_batches * chunks, ramp_tokens=0)


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Each optimizer step's batch and the tokens consumed before it. The batch changes only where a stage starts;
    every step accumulates a whole number of chunks of one fixed shape (`chunk` sequences)."""

    seq_len: int
    chunk: int  # sequences per gradient call: the one batch shape the jitted gradient function sees
    total_steps: int
    stage_steps: tuple[int, ...]  # first step of each stage, from 0, increasing
    stage_tokens: tuple[int, ...]  # tokens consumed before that step
    stage_chunks: tuple[int, ...]  # chunks per step during the stage

    @property
    def ramps(self) -> bool:
        """Whether steps accumulate chunks smaller than the batch (recipe.ramps(train) of the plan's config)."""
        return self.stage_chunks[-1] > 1

    def chunks_at(self, step: int) -> int:
        return self.stage_chunks[self._stage(step)]

    def chunks_at_traced(self, step: jax.Array) -> jax.Array:
        """chunks_at for a traced step (inside jit)."""
        k = jnp.searchsorted(jnp.asarray(self.stage_steps, jnp.int32), step, side="right") - 1
        return jnp.asarray(self.stage_chunks, jnp.int32)[k]

    def batch_size_at(self, step: int) -> int:
        """Sequences in optimizer step `step` (counted from 0)."""
        return self.chunk * self.chunks_at(step)

    def tokens_at(self, step: int) -> int:
        """Tokens consumed by steps 0 .. step-1, exactly."""
        k = self._stage(step)
        per_step = self.chunk * self.stage_chunks[k] * self.seq_len
        return self.stage_tokens[k] + (step - self.stage_steps[k]) * per_step

    def tokens_at_traced(self, step: jax.Array) -> jax.Array:
        """tokens_at for a traced step (inside jit), in float32: relative error ~1e-7, ample for a learning rate."""
        starts = jnp.asarray(self.stage_steps, jnp.int32)
        k = jnp.searchsorted(starts, step, side="right") - 1
        per_step = jnp.asarray([self.chunk * n * self.seq_len for n in self.stage_chunks], jnp.float32)
        since = (step - starts[k]).astype(jnp.float32)
        return jnp.asarray(self.stage_tokens, jnp.float32)[k] + since * per_step[k]

    def _stage(self, step: int) -> int:
        if step < 0:
            raise ValueError(f"step {step} is negative")
        return bisect.bisect_right(self.stage_steps, step) - 1


def step_plan(train: TrainConfig, seq_len: int) -> StepPlan:
    """The stages of a run. With a ramp of C = batch_size / ramp_batch chunks, stage k runs k+1 chunks per step
    (Megatron-LM's rule: one chunk plus floor(c / P) more, c the tokens consumed before the step, P = ramp_tokens /
    (C - 1)); without one, every step is one chunk of the whole batch."""
    check(train)
    chunk = train.ramp_batch if ramps(train) else train.batch_size
    C, per_chunk = train.batch_size // chunk, chunk * seq_len
    stages, step, tokens = [], 0, 0
    for n in range(1, C):
        # Steps until the tokens consumed reach n/(C-1) of the ramp; 0 when a larger earlier step passed it.
        need = n * train.ramp_tokens - tokens * (C - 1)
        steps = max(0, -(-need // ((C - 1) * n * per_chunk)))
        if steps:
            stages.append((step, tokens, n))
            step, tokens = step + steps, tokens + steps * n * per_chunk
    stages.append((step, tokens, C))
    total = train.steps or _steps_for_tokens(stages, per_chunk, train.tokens)
    starts, consumed, counts = zip(*stages)
    return StepPlan(seq_len, chunk, total, starts, consumed, counts)


def _steps_for_tokens(stages: list[tuple[int, int, int]], per_chunk: int, budget: int) -> int:
    """The first step count whose tokens reach the budget (the last step may pass it by less than one batch)."""
    ends = [tokens for _, tokens, _ in stages[1:]] + [budget]
    step, tokens, n = stages[next(k for k, end in enumerate(ends) if end >= budget)]
    return step + max(0, -(-(budget - tokens) // (n * per_chunk)))


def learning_rate_schedule(train: TrainConfig, seq_len: int) -> optax.Schedule:
    """The LR as a function of the optimizer step. On a token clock, the step schedule's shape (warmup, cosine or
    wsd) is laid out in tokens and read at tokens_at(step), so a batch ramp or a changed batch keeps it in place."""
    plan = step_plan(train, seq_len)
    opt = train.optimizer
    if not opt.on_tokens:
        return optimizer_lib.learning_rate_schedule(opt, plan.total_steps)
    end = opt.decay_tokens or plan.tokens_at(plan.total_steps)
    on_tokens = optimizer_lib.learning_rate_schedule(dataclasses.replace(opt, warmup_steps=opt.warmup_tokens), end)
    return lambda step: on_tokens(plan.tokens_at_traced(step))


@dataclasses.dataclass(frozen=True)
class TrainingCompute:
    tokens: int  # consumed by the whole run (the last step may pass the budget by under one batch)
    params: int
    matmul: float  # FLOPs of the weight matmuls (6 x the weights every token multiplies)
    attention: float  # FLOPs of QK^T and AV, the full square (model/flops.py)

    @property
    def total(self) -> float:
        return self.matmul + self.attention

    @property
    def paper_count(self) -> float:
        """Table D.1's method: 6 x parameters x tokens, attention left out."""
        return 6.0 * self.params * self.tokens


def training_compute(model: ModelConfig, train: TrainConfig, seq_len: int) -> TrainingCompute:
    plan = step_plan(train, seq_len)
    tokens = plan.tokens_at(plan.total_steps)
    per_token = flops_per_token(model, seq_len)
    return TrainingCompute(tokens, count_params(model).total, per_token.matmul * tokens, per_token.attention * tokens)
