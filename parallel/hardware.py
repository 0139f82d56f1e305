"""One table of accelerators: dense peak FLOP/s per dtype and memory per chip in bytes, as the vendors sell them.

Used by MFU (training/mfu.py), the planner and `meshlm bench`. NVIDIA sells memory in decimal GB (an H100's
80 GB is 74.5 GiB); Google's TPU documents give GiB. Peaks are dense (no 2:4 sparsity), SXM parts for GPUs."""

import dataclasses

GB, GiB, T = 1e9, 2**30, 1e12


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s of one chip
    memory_bytes: float

    def peak(self, dtype: str = "bfloat16") -> float:
        """Dense FLOP/s of one chip in `dtype` (float32 means TF32 on GPUs); the bf16 figure where no other is given."""
        return self.peak_flops.get(dtype, self.peak_flops["bfloat16"])


CHIPS = (
    Chip("tpu v4", {"bfloat16": 275 * T}, 32 * GiB),
    Chip("tpu v5 lite", {"bfloat16": 197 * T}, 16 * GiB),  # v5e reports itself as "TPU v5 lite"
    Chip("tpu v5e", {"bfloat16": 197 * T}, 16 * GiB),
    Chip("tpu v5p", {"bfloat16": 459 * T}, 95 * GiB),
    Chip("tpu v5", {"bfloat16": 459 * T}, 95 * GiB),
    Chip("tpu v6 lite", {"bfloat16": 918 * T}, 32 * GiB),  # v6e (Trillium)
    Chip("tpu v6e", {"bfloat16": 918 * T}, 32 * GiB),
    Chip("a100", {"bfloat16": 312 * T, "float32": 156 * T}, 80 * GB),  # the 80 GB part; float32 = TF32
    Chip("h100", {"bfloat16": 989 * T, "float32": 494 * T}, 80 * GB),
    Chip("h200", {"bfloat16": 989 * T, "float32": 494 * T}, 141 * GB),
)


def device_name(kind: str) -> str:
    """ "tpu-v5p" and "TPU v5p" both become "tpu v5p", the spelling of jax's device_kind and of the table."""
    return kind.lower().replace("-", " ").replace("_", " ")


def lookup(kind: str) -> Chip | None:
    """The chip whose name is the longest match inside `kind` ("NVIDIA H100 80GB HBM3" -> h100), or None."""
    name = device_name(kind)
    matches = [chip for chip in CHIPS if chip.name in name]
    return max(matches, key=lambda chip: len(chip.name)) if matches else None


def names() -> list[str]:
    return sorted({chip.name.replace(" ", "-") for chip in CHIPS if "lite" not in chip.name})
