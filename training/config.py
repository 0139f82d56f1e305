"""Typed configuration of the optimizer and the training loop."""

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    peak_lr: float = 6e-4
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # GPT-3: cosine decay to 10% of the peak
    decay_fraction: float = 0.2  # wsd: the last fraction of the run decays linearly to min_lr_ratio
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # decoupled (AdamW); matrices only, never norms or biases
    grad_clip: float = 1.0  # global norm; 0 = off
    z_loss: float = 0.0  # weight of log(Z)^2 (PaLM), 0 = off


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # sequences per step, over all devices and micro-batches
    seq_len: int = 0  # 0 = model.n_ctx
    micro_batches: int = 1  # gradient accumulation: the batch is split into this many sequential pieces
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
