"""Attention variants, registered by name and chosen with `model.attention`.

A variant is one file in this folder defining a function

    attend(q_BTHK, k_BSHK, v_BSHK, mask: AttentionMask) -> out_BTHK

and decorating it with `@register("name")`; add its import at the bottom of this file. The shared suite in
tests/model/test_attention_variants.py then checks causality, parity with `reference` and KV-cache decoding.
"""

from collections.abc import Callable
from typing import Protocol

import jax

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.errors import ConfigError


class AttentionFn(Protocol):
    def __call__(self, q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: AttentionMask) -> jax.Array: ...


_REGISTRY: dict[str, AttentionFn] = {}


def register(name: str) -> Callable[[AttentionFn], AttentionFn]:
    def add(fn: AttentionFn) -> AttentionFn:
        if name in _REGISTRY:
            raise ValueError(f"attention variant {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def get(name: str) -> AttentionFn:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attention variant {name!r}; set model.attention to one of: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


from meshlm.model.attention import blocked, fused, reference  # noqa: E402,F401  (registers the variants)
