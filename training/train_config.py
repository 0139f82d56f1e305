"""Typed configuration of the optimizer and the training loop (sections of the run's Config tree)."""

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    peak_lr: float = 6e-4
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100
    # Either token field > 0 puts the schedule on a token clock (GPT-3), so a changed batch keeps it in place.
    warmup_tokens: int = 0  # linear warmup over this many tokens instead of warmup_steps (GPT-3: 375M)
    decay_tokens: int = 0  # the decay ends here and the LR stays at its floor (GPT-3: 260B); 0 = at the last step
    min_lr_ratio: float = 0.1  # GPT-3: cosine decay to 10% of the peak
    decay_fraction: float = 0.2  # wsd: the last fraction of the run decays to min_lr_ratio
    decay_shape: Literal["linear", "1-sqrt"] = "linear"  # wsd: how it decays (1-sqrt: Hägele et al. 2024)
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # decoupled (AdamW); matrices only, never norms or biases
    grad_clip: float = 1.0  # global norm; 0 = off
    z_loss: float = 0.0  # weight of log(Z)^2 (PaLM), 0 = off

    @property
    def on_tokens(self) -> bool:
        return self.warmup_tokens > 0 or self.decay_tokens > 0


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Where the metrics go besides metrics.jsonl: TensorBoard event files, or a Weights & Biases run (training/
    trackers.py; extra `wandb`). Not part of the run's identity: a resumed run may change it."""

    kind: Literal["tensorboard", "wandb"] = "tensorboard"
    project: str = ""  # wandb: "" = $WANDB_PROJECT, else meshlm
    entity: str = ""  # wandb: "" = $WANDB_ENTITY, else the account's default
    group: str = ""  # wandb: runs shown together; a sweep's runs get the sweep's name
    name: str = ""  # wandb: the run's display name; "" = the run directory's name


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # the run's length in optimizer steps; 0 = derived from `tokens`
    tokens: int = 0  # > 0 (with steps 0): the run's length in tokens, so a changed batch keeps the token budget
    batch_size: int = 32  # sequences per step, over all devices and micro-batches (at the end of a ramp)
    seq_len: int = 0  # 0 = model.n_ctx
    micro_batches: int = 1  # gradient accumulation: the batch (each ramp chunk) is split into this many pieces
    # > 0: the batch grows linearly in tokens from ramp_batch to batch_size over this many tokens, ramp_batch
    # sequences at a time (GPT-3, Appendix B). Each step accumulates chunks of ramp_batch sequences, one shape, so
    # nothing recompiles. No ramp when batch_size <= ramp_batch.
    ramp_tokens: int = 0
    ramp_batch: int = 16  # sequences: the ramp's first batch and its increment (GPT-3: 32k tokens = 16 x 2048)
    seed: int = 0
    # Optimizer steps per XLA call (a scan over stacked batches), where no log, hook or checkpoint falls between
    # them: fewer dispatches, and on CPU one temporary buffer (freshly mapped memory) for several steps.
    steps_per_call: int = 1
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    # Also saved at these steps and never deleted: a sweep's trunk keeps the step each cooldown branch starts from.
    checkpoint_steps: tuple[int, ...] = ()
    # "A:B": a jax.profiler trace of the steps after step A up to step B, in RUN_DIR/profile (TensorBoard, xprof)
    profile: str = ""
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop with a diagnosis, or skip the batch
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    tracker: TrackerConfig = dataclasses.field(default_factory=TrackerConfig)
