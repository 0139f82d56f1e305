"""One table of accelerators: dense peak FLOP/s per dtype, memory and link bandwidths per chip, as vendors sell them.

Used by MFU (training/mfu.py), the planner and `meshlm bench`. NVIDIA sells memory in decimal GB (an H100's
80 GB is 74.5 GiB); Google's TPU documents give GiB. Peaks are dense (no 2:4 sparsity), SXM parts for GPUs.

Links, in bytes/s per chip: `ici` inside a slice (TPU ICI, GPU NVLink) is the data sheets' figure, both directions
over all links; `dcn` between slices (the data-centre network; a GPU node's InfiniBand) is one direction. Sources:
the Cloud TPU pages' "bidirectional ICI bandwidth per chip" (v5e 400, v5p 1200, v6e 800 GB/s), v5p's "DCN bandwidth
per chip" (50 Gb/s) and v5e's 2 x 100 Gb/s NICs per host of 8 chips (25 Gb/s per chip). The v4 page gives neither:
its ICI is the JAX scaling book's 45 GB/s per link one way x 6 links x 2, and v4's and v6e's DCN is the scaling
book's ~25 GB/s per host over its chips (4 for v4, 8 for v6e; unverified). NVIDIA's data sheets: NVLink 600 GB/s
(A100), 900 GB/s (H100, H200); DGX A100 one 200 Gb/s HDR and DGX H100/H200 one 400 Gb/s NDR InfiniBand port per
GPU."""

import dataclasses

GB, GiB, T = 1e9, 2**30, 1e12
Gb = GB / 8  # network links are sold in bits per second


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s of one chip
    memory_bytes: float
    ici: float  # bytes/s inside a slice, both directions, all links
    dcn: float  # bytes/s to other slices, one direction

    def peak(self, dtype: str = "bfloat16") -> float:
        """Dense FLOP/s of one chip in `dtype` (float32 means TF32 on GPUs); the bf16 figure where no other is given."""
        return self.peak_flops.get(dtype, self.peak_flops["bfloat16"])


CHIPS = (
    Chip("tpu v4", {"bfloat16": 275 * T}, 32 * GiB, ici=540 * GB, dcn=25 * GB / 4),
    Chip("tpu v5 lite", {"bfloat16": 197 * T}, 16 * GiB, ici=400 * GB, dcn=25 * Gb),  # v5e reports "TPU v5 lite"
    Chip("tpu v5e", {"bfloat16": 197 * T}, 16 * GiB, ici=400 * GB, dcn=25 * Gb),
    Chip("tpu v5p", {"bfloat16": 459 * T}, 95 * GiB, ici=1200 * GB, dcn=50 * Gb),
    Chip("tpu v5", {"bfloat16": 459 * T}, 95 * GiB, ici=1200 * GB, dcn=50 * Gb),
    Chip("tpu v6 lite", {"bfloat16": 918 * T}, 32 * GiB, ici=800 * GB, dcn=25 * GB / 8),  # v6e (Trillium)
    Chip("tpu v6e", {"bfloat16": 918 * T}, 32 * GiB, ici=800 * GB, dcn=25 * GB / 8),
    # the 80 GB part; float32 = TF32
    Chip("a100", {"bfloat16": 312 * T, "float32": 156 * T}, 80 * GB, ici=600 * GB, dcn=200 * Gb),
    Chip("h100", {"bfloat16": 989 * T, "float32": 494 * T}, 80 * GB, ici=900 * GB, dcn=400 * Gb),
    Chip("h200", {"bfloat16": 989 * T, "float32": 494 * T}, 141 * GB, ici=900 * GB, dcn=400 * Gb),
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
