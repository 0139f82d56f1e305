"""Per-device memory, FLOPs, communication and step time of a model on a mesh, from shapes alone (nothing is
allocated).

XLA's own memory analysis of the real train step, the check on these figures, is `TrainSetup.memory_analysis()`
in training/setup.py: it needs the train step, which lives a layer above this one."""

import dataclasses
import math
from typing import Protocol

import jax.numpy as jnp

from meshlm.model.attention import blockwise as blockwise_kernel
from meshlm.model.config import ModelConfig
from meshlm.model.flops import flops_per_token
from meshlm.parallel import hardware
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.rules import partition, rules_for
from meshlm.parallel.sharding import flat_params


@dataclasses.dataclass(frozen=True)
class Plan:
    mesh: dict[str, int]
    device: str
    batch: int  # sequences per step, all devices
    seq_len: int
    micro_batches: int
    remat: str
    params: float  # bytes per device, each
    grads: float
    optimizer: float
    activations: float
    gathered: float  # FSDP: the layer weights all-gathered at the moment
    hbm: float | None  # bytes per chip
    flops_per_step: float  # model FLOPs (6N + attention, PaLM), not counting rematerialisation
    peak_flops: float | None  # per chip
    mfu: float
    slices: int
    ici_bytes: float  # sent by each chip per step to others of its slice
    context_bytes: float  # the part of ici_bytes that context parallelism's attention sends
    dcn_bytes: float  # sent by each slice per step to the other slices
    ici: float | None  # bytes/s per chip, both directions
    dcn: float | None  # bytes/s per chip, one direction

    @property
    def chips(self) -> int:
        return math.prod(self.mesh.values())

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.gathered

    @property
    def step_time(self) -> float | None:
        return None if self.peak_flops is None else self.flops_per_step / (self.chips * self.peak_flops * self.mfu)

    @property
    def ici_time(self) -> float | None:
        """A lower bound: every link of the chip sending at once, in one direction (half the two-way figure)."""
        return None if self.ici is None else self.ici_bytes / (self.ici / 2)

    @property
    def dcn_time(self) -> float | None:
        """The gradient all-reduce between slices over all of a slice's chips' links, nothing else on the network."""
        return None if self.dcn is None else self.dcn_bytes / (self.dcn * self.chips / self.slices)


class BatchShape(Protocol):
    """What the planner reads of a training config (training/config.py's TrainConfig has these fields)."""

    batch_size: int  # sequences per step, all devices
    seq_len: int  # 0 = model.n_ctx
    micro_batches: int


def plan(model: ModelConfig, train: BatchShape, mesh: MeshConfig, chips: int, device: str, mfu: float) -> Plan:
    sizes = mesh.axis_sizes(chips)
    rules = rules_for(mesh)
    params, layer_params, whole = 0.0, 0.0, 0.0
    for x, names in flat_params(model).values():
        dims = partition(x.shape, names, sizes, rules)
        params += math.prod(n // math.prod(sizes[a] for a in d) for n, d in zip(x.shape, dims)) * x.dtype.itemsize
        layer_params += math.prod(x.shape) / model.n_layers if names[0] == "layers" else 0
        whole += math.prod(x.shape) * x.dtype.itemsize
    T = train.seq_len or model.n_ctx
    chip = hardware.lookup(device)
    slices = math.prod(mesh.dcn_sizes.values())
    rows = train.batch_size // train.micro_batches
    return Plan(
        mesh=sizes,
        device=hardware.device_name(device),
        batch=train.batch_size,
        seq_len=T,
        micro_batches=train.micro_batches,
        remat=model.remat,
        params=params,
        grads=params,  # in the parameters' dtype and sharding
        optimizer=2 * params,  # AdamW: mu and nu, each shaped and sharded like the parameters
        activations=activation_bytes(model, sizes, mesh.sequence_parallel, rows, T, mesh.context_impl),
        gathered=gathered_bytes(model, sizes, layer_params),
        hbm=None if chip is None else chip.memory_bytes,
        flops_per_step=flops_per_token(model, T).total * train.batch_size * T,
        peak_flops=None if chip is None else chip.peak("bfloat16"),
        mfu=mfu,
        slices=slices,
        ici_bytes=ici_bytes(model, sizes, slices, params, rows, T, train.micro_batches, mesh.context_impl),
        context_bytes=context_bytes(model, sizes, rows, T, train.micro_batches, mesh.context_impl),
        dcn_bytes=dcn_bytes(slices, whole),
        ici=None if chip is None else chip.ici,
        dcn=None if chip is None else chip.dcn,
    )


def activation_bytes(
    model: ModelConfig, sizes: dict[str, int], sequence_parallel: bool, rows: int, T: int, context_impl: str = "ring"
) -> float:
    """Peak bytes of one micro-batch's activations per device: what each layer keeps for the backward pass,
    plus the larger of the head (f32 logits and their gradient) and one layer being recomputed.

    Per token and layer, in elements of the compute dtype; t = tensor size, s = t under sequence parallelism
    (residual-stream tensors split along the sequence), else 1:
      none                              6 D/s + 4 A/t + 3 n F/t, and 9 bytes x H S / t for the attention
                                        logits, probabilities (f32) and mask over S keys
      full                              D/s, the layer input (the scan carry)
      dots_saveable                     2 D/s + 4 A/t + (n - 1) F/t + H S / t: every matmul output
      dots_with_no_batch_dims_saveable  2 D/s + 3 A/t + (n - 1) F/t: weight matmuls only, not attention's
    with n = 2 MLP matmuls (3 for SwiGLU) and S = T keys per query. A device of a context axis of size k holds T/k
    tokens of each sequence. Ring attention keeps no logits (S = 0; its backward recomputes each block) and adds
    one block's, T/2k keys per query, to the peak; the all-gather variant's kernel sees all T keys. The `blockwise`
    kernel keeps none either, and its peak holds one block of queries (512) over its keys.
    The coefficients are XLA's (CPU, f32): measured by varying one dimension at a time, they match its memory
    analysis to a few percent (tests/parallel/test_planner.py). XLA on CPU computes bfloat16 in f32, so for
    bfloat16 models its figures run higher than these."""
    t, dp, k = sizes["tensor"], sizes["data"] * sizes["fsdp"], sizes["context"]
    s = t if sequence_parallel else 1
    c = jnp.dtype(model.dtype).itemsize
    D, A, H, F = model.d_model, model.n_heads * model.head_dim, model.n_heads, model.mlp_dim
    V = model.vocab_size // t if model.vocab_size % t == 0 else model.vocab_size
    n = 3 if model.mlp == "swiglu" else 2
    ring = k > 1 and context_impl == "ring"
    keys = T // (2 * k) if ring else T  # per query: the ring's one block at a time, else the whole sequence
    blockwise = model.attention == "blockwise"
    S = 0 if ring or blockwise else T
    none = c * (6 * D / s + 4 * A / t + 3 * n * F / t) + 9 * H * S / t
    saved = {
        "none": none,
        "full": c * D / s,
        "dots_saveable": c * (2 * D / s + 4 * A / t + (n - 1) * F / t + H * S / t),
        "dots_with_no_batch_dims_saveable": c * (2 * D / s + 3 * A / t + (n - 1) * F / t),
    }[model.remat]
    # f32 logits and their gradient (plus both in the compute dtype when it is narrower); final norm, embedding.
    head = 2 * 4 * V + (2 * c * V if c < 4 else 0) + c * 6 * D
    queries = min(blockwise_kernel.Q_BLOCK, T // k) if blockwise else T // k
    block = 9 * H * keys * queries / (T // k) / t if ring or blockwise else 0
    peak = max(head, block) if model.remat == "none" else max(head, none + block)
    return rows // dp * T // k * (model.n_layers * saved + peak)


def gathered_bytes(model: ModelConfig, sizes: dict[str, int], layer_params: float) -> float:
    """FSDP all-gathers one layer's weights at a time (forward and backward): two layers' worth, still split t ways."""
    return 0.0 if sizes["fsdp"] == 1 else 2 * layer_params * jnp.dtype(model.param_dtype).itemsize / sizes["tensor"]


def ici_bytes(
    model: ModelConfig,
    sizes: dict[str, int],
    slices: int,
    params: float,
    rows: int,
    T: int,
    M: int,
    context_impl: str = "ring",
) -> float:
    """Bytes each chip sends per step inside its slice, by ring collectives (a gather or reduce-scatter over k
    devices sends k - 1 shards, an all-reduce 2 (k - 1)/k of the whole). P = the device's parameter bytes, f, t, k
    the fsdp, tensor and context sizes, d = data / slices its part inside a slice, M micro-batches:
      fsdp     (2 M + 1)(f - 1) P       each weight gathered forward and backward per micro-batch, its gradient
                                        reduce-scattered once
      data     2 (d k - 1)/(d k) P      the gradient all-reduce's part inside the slice (reduce-scatter before
                                        the DCN step, all-gather after), over the context devices too
      tensor   4 L M 2 (t - 1)/t x rows/(data fsdp) x T/k x D x c    Megatron's two all-reduces per block forward
                                        and two backward, of the residual stream (c bytes each in the compute dtype)
      context  context_bytes
    Gradients count once per step, as when XLA moves the accumulated reduction out of the micro-batch loop (else
    M times); remat recomputation and the vocabulary-split head's small reductions are not counted."""
    f, t, d, k = sizes["fsdp"], sizes["tensor"], sizes["data"] // slices, sizes["context"]
    c = jnp.dtype(model.dtype).itemsize
    tokens = rows // (sizes["data"] * f) * T // k
    fsdp = (2 * M + 1) * (f - 1) * params
    data = 2 * (d * k - 1) / (d * k) * params
    tensor = 4 * model.n_layers * M * 2 * (t - 1) / t * tokens * model.d_model * c
    return fsdp + data + tensor + context_bytes(model, sizes, rows, T, M, context_impl)


def context_bytes(model: ModelConfig, sizes: dict[str, int], rows: int, T: int, M: int, impl: str) -> float:
    """Bytes each chip sends per step for context parallelism over k devices. One block is the keys and values of a
    device's tokens, b = 2 x rows/(data fsdp) x T/k x kv_heads/t x d_head elements; per layer and micro-batch:
      ring        (k - 1) b c forward; (k - 1) b c again and k b x 4 (their gradients, accumulated in f32) backward
      all_gather  (k - 1) b c forward (the gather), (k - 1) b c backward (the gradients' reduce-scatter)
    plus, per micro-batch, the final hidden states' return to time order (rows/(data fsdp) x T/k x D x c, forward
    and backward); moving the token ids into the load-balanced order is negligible."""
    k = sizes["context"]
    if k == 1:
        return 0.0
    t, c = sizes["tensor"], jnp.dtype(model.dtype).itemsize
    kv_heads = model.kv_heads / t if model.kv_heads % t == 0 else model.kv_heads
    tokens = rows // (sizes["data"] * sizes["fsdp"]) * T / k
    b = 2 * tokens * kv_heads * model.head_dim
    per_layer = (2 * (k - 1) * b * c + k * b * 4) if impl == "ring" else 2 * (k - 1) * b * c
    return model.n_layers * M * per_layer + M * 2 * tokens * model.d_model * c


def dcn_bytes(slices: int, grad_bytes: float) -> float:
    """Bytes each slice sends per step to the others: a ring all-reduce of the whole gradient between n slices,
    2 (n - 1)/n x its bytes (each slice holds it all, spread over its chips; nothing else crosses slices)."""
    return 2 * (slices - 1) / slices * grad_bytes
