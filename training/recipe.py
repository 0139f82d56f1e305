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
    row = GPT3_RECIPES.get(preset)
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
        micro_batches=row.batch_size // RAMP_START,
        ramp_tokens=row.ramp_tokens,
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
    if train.ramp_tokens and train.micro_batches < 2:
        raise ConfigError(
            f"train.ramp_tokens={train.ramp_tokens} needs train.micro_batches > 1: the ramp grows the batch one "
            "micro-batch at a time; raise train.micro_batches or set train.ramp_tokens=0"
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


def fit_to_mesh(train: TrainConfig, data_parallel: int) -> TrainConfig:
    """The same batch in the most micro-batches (at most train's) that each span every data-parallel device: on a
    wide mesh the ramp starts at a larger micro-batch. When one micro-batch must be the whole batch, or no count
    fits, there is no ramp (and a batch that is no multiple of the devices stays for the caller to round)."""
    fits = [m for m in range(train.micro_batches, 0, -1) if train.batch_size % (m * data_parallel) == 0] or [1]
    return dataclasses.replace(train, micro_batches=fits[0], ramp_tokens=train.ramp_tokens if fits[0] > 1 else 0)


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Each optimizer step's batch and the tokens consumed before it. The batch changes only where a stage starts;
    every step runs a whole number of micro-batches of one fixed shape (`micro_batch` sequences)."""

    seq_len: int
    micro_batch: int  # sequences per micro-batch: the one batch shape the jitted gradient function sees
    total_steps: int
    stage_steps: tuple[int, ...]  # first step of each stage, from 0, increasing
    stage_tokens: tuple[int, ...]  # tokens consumed before that step
    stage_micro_batches: tuple[int, ...]  # micro-batches per step during the stage

    @property
    def ramps(self) -> bool:
        return len(self.stage_steps) > 1

    def micro_batches_at(self, step: int) -> int:
        return self.stage_micro_batches[self._stage(step)]

    def micro_batches_at_traced(self, step: jax.Array) -> jax.Array:
        """micro_batches_at for a traced step (inside jit)."""
        k = jnp.searchsorted(jnp.asarray(self.stage_steps, jnp.int32), step, side="right") - 1
        return jnp.asarray(self.stage_micro_batches, jnp.int32)[k]

    def batch_size_at(self, step: int) -> int:
        """Sequences in optimizer step `step` (counted from 0)."""
        return self.micro_batch * self.micro_batches_at(step)

    def tokens_at(self, step: int) -> int:
        """Tokens consumed by steps 0 .. step-1, exactly."""
        k = self._stage(step)
        per_step = self.micro_batch * self.stage_micro_batches[k] * self.seq_len
        return self.stage_tokens[k] + (step - self.stage_steps[k]) * per_step

    def tokens_at_traced(self, step: jax.Array) -> jax.Array:
        """tokens_at for a traced step (inside jit), in float32: relative error ~1e-7, ample for a learning rate."""
        starts = jnp.asarray(self.stage_steps, jnp.int32)
        k = jnp.searchsorted(starts, step, side="right") - 1
        per_step = jnp.asarray([self.micro_batch * n * self.seq_len for n in self.stage_micro_batches], jnp.float32)
        since = (step - starts[k]).astype(jnp.float32)
        return jnp.asarray(self.stage_tokens, jnp.float32)[k] + since * per_step[k]

    def _stage(self, step: int) -> int:
        if step < 0:
            raise ValueError(f"step {step} is negative")
        return bisect.bisect_right(self.stage_steps, step) - 1


def step_plan(train: TrainConfig, seq_len: int) -> StepPlan:
    """The stages of a run: with a ramp, stage k runs k+1 micro-batches per step (Megatron-LM's rule: the batch is
    one micro-batch plus floor(c / P) more, c the tokens consumed before the step, P = ramp_tokens / (M - 1))."""
    check(train)
    M = train.micro_batches
    micro, per_micro = train.batch_size // M, train.batch_size // M * seq_len
    stages, step, tokens = [], 0, 0
    if train.ramp_tokens:
        increments = M - 1
        for n in range(1, M):
            # Steps until the tokens consumed reach n/(M-1) of the ramp; 0 when a larger earlier step passed it.
            need = n * train.ramp_tokens - tokens * increments
            steps = max(0, -(-need // (increments * n * per_micro)))
            if steps:
                stages.append((step, tokens, n))
                step, tokens = step + steps, tokens + steps * n * per_micro
    stages.append((step, tokens, M))
    total = train.steps or _steps_for_tokens(stages, per_micro, train.tokens)
    starts, consumed, counts = zip(*stages)
    return StepPlan(seq_len, micro, total, starts, consumed, counts)


def _steps_for_tokens(stages: list[tuple[int, int, int]], per_micro: int, budget: int) -> int:
    """The first step count whose tokens reach the budget (the last step may pass it by less than one batch)."""
    for (step, tokens, n), nxt in zip(stages, stages[1:] + [None]):
        if nxt is None or nxt[1] >= budget:
            return step + max(0, -(-(budget - tokens) // (n * per_micro)))
    raise AssertionError("unreachable: the last stage has no end")


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
