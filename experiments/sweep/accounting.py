"""Each run's exact FLOP accounting: the three parameter counts, tokens and compute, with C = 6 N_flops D exactly."""

import dataclasses
import functools

from meshlm.model.config import ModelConfig
from meshlm.model.flops import count_params, flops_per_token


@dataclasses.dataclass(frozen=True)
class Accounting:
    params_non_embedding: int  # Kaplan's N
    params_total: int  # Chinchilla's N
    params_flops: float  # FLOP-equivalent N = training FLOPs per token / 6 (head and attention included)
    flops_per_token: float  # training (forward + backward) FLOPs per token, meshlm.model.flops
    tokens: int  # D = steps x batch_size x seq_len, padding included (it costs FLOPs too)
    compute: float  # C = flops_per_token x tokens = 6 N_flops D

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def flop_params(model: ModelConfig, seq_len: int) -> float:
    return flops_per_token(model, seq_len).total / 6.0


@functools.cache  # a sweep asks for the same shape at every budget; each count builds the model's shapes
def _params(model: ModelConfig):
    return count_params(model)


def account(model: ModelConfig, seq_len: int, tokens: int) -> Accounting:
    params = _params(model)
    per_token = flops_per_token(model, seq_len).total
    return Accounting(
        params_non_embedding=params.non_embedding,
        params_total=params.total,
        params_flops=per_token / 6.0,
        flops_per_token=per_token,
        tokens=tokens,
        compute=per_token * tokens,
    )
