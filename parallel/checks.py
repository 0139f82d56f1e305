"""Whether a mesh suits a model and a batch: one-line errors that name the fix, before anything is compiled."""

from meshlm.model import attention
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.context import ring_refusal


def check_mesh(
    sizes: dict[str, int],
    sequence_parallel: bool,
    model: ModelConfig,
    batch_size: int,
    micro_batches: int,
    seq_len: int,
    process_count: int = 1,
    context_impl: str = "ring",
) -> None:
    tensor, fsdp, dp = sizes["tensor"], sizes["fsdp"], sizes["data"] * sizes["fsdp"]
    # Tensor parallelism that cannot split the heads or the MLP would silently replicate them: refuse instead.
    for name, value in (("n_heads", model.n_heads), ("d_mlp", model.mlp_dim)):
        if value % tensor:
            raise ConfigError(
                f"mesh tensor={tensor} does not divide model.{name}={value}; choose a tensor size dividing {value}"
            )
    if model.d_model % fsdp:
        raise ConfigError(
            f"mesh fsdp={fsdp} does not divide model.d_model={model.d_model}; choose an fsdp size dividing it"
        )
    rows = batch_size // micro_batches
    if rows % dp:
        raise ConfigError(
            f"train.batch_size={batch_size} in {micro_batches} micro-batch(es) gives {rows} sequences per micro-batch, "
            f"not divisible by the data-parallel size data*fsdp={dp}; use a batch_size that is a multiple of "
            f"{dp * micro_batches}"
        )
    if sequence_parallel and seq_len % tensor:
        raise ConfigError(
            f"sequence parallelism splits train.seq_len={seq_len} over tensor={tensor}, which does not divide it; "
            "change one of them"
        )
    context = sizes["context"]
    if context > 1 and seq_len % (2 * context):
        raise ConfigError(
            f"context parallelism cuts train.seq_len={seq_len} into 2 x context={context} chunks (one from the start "
            f"and one from the end of the sequence per device), which do not divide it; use a multiple of {2 * context}"
        )
    if context > 1 and context_impl == "ring" and attention.block(attention.kernel(model.attention)) is None:
        raise ConfigError(ring_refusal(model.attention))
    if dp % process_count:
        raise ConfigError(
            f"the data-parallel size data*fsdp={dp} is not a multiple of the {process_count} processes, so they "
            "cannot each "
            "feed their own slice of the batch; give data or fsdp more devices"
        )
