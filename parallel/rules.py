"""Logical axis names -> mesh axes, one table per strategy, as plain data. The model names logical axes only.

Parameter axes (model/layers.py, model/attention/): layers, vocab, embed, ctx, qkv, heads, kv_heads, kv, latent, mlp.
Activation axes (block boundaries in model/transformer.py): act_batch, act_seq, act_embed; batches [B, T] of token
ids, positions and segment ids: act_batch, batch_seq.
"""

from meshlm.parallel.config import MeshConfig

Rules = tuple[tuple[str, str], ...]

RULES: dict[str, Rules] = {
    # Data parallel: every device holds all weights and a slice of the batch.
    "data": (("act_batch", "data"),),
    # FSDP (ZeRO-3): the batch is split as in data parallel, and every weight too (embed first, the other
    # names for arrays without one); XLA gathers one layer's weights when the layer scan reaches it.
    "fsdp": (("act_batch", "fsdp"), ("embed", "fsdp"), ("mlp", "fsdp"), ("kv", "fsdp")),
    # Megatron tensor parallel: attention heads and MLP columns (then rows) split, so each block needs one
    # all-reduce forward and one backward; the vocabulary is split too. Grouped-query key/value heads split where
    # the tensor axis divides them and are replicated otherwise (MQA's single head always is).
    "tensor": (("heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor")),
    # Megatron sequence parallel: between blocks (norms, residual adds, dropout) the sequence is split over the
    # same tensor axis, so those activations are not replicated tensor-fold.
    "sequence": (("act_seq", "tensor"),),
    # Context parallelism: every sequence split over `context` for the whole step, batches included; attention
    # reaches the other devices' keys by ring or all-gather (parallel/context.py). Weights are replicated over it.
    "context": (("act_seq", "context"), ("batch_seq", "context")),
}


def rules_for(cfg: MeshConfig) -> Rules:
    """The tables of a mesh config, in priority order. Tables of size-1 axes are harmless: they shard nothing."""
    # Context before sequence: a sequence split over both is split over context first (the outer part), as the
    # shard_map of context parallelism expects.
    sequence = ("sequence",) if cfg.sequence_parallel else ()
    names = ("tensor", "context", *sequence, "data", "fsdp")
    return sum((RULES[name] for name in names), ())


def partition(
    shape: tuple[int, ...], names: tuple[str | None, ...], sizes: dict[str, int], rules: Rules
) -> tuple[tuple[str, ...], ...]:
    """The mesh axes of each dimension. Earlier rules win; a mesh axis shards at most one dimension of an array,
    and never one it does not divide (that dimension stays whole: small biases, batches of 3 prompts)."""
    dims: list[list[str]] = [[] for _ in shape]
    used: set[str] = set()
    for logical, axis in rules:
        if sizes.get(axis, 1) == 1 or axis in used:
            continue
        for i, name in enumerate(names):
            split = sizes[axis]
            for other in dims[i]:
                split *= sizes[other]
            if name == logical and shape[i] % split == 0:
                dims[i].append(axis)
                used.add(axis)
                break
    return tuple(tuple(d) for d in dims)
