"""Memory per chip, from the vendors' data sheets: the planner's budget (peak FLOP/s are in training/mfu.py)."""

GiB = 2**30

HBM_BYTES = {
    "tpu v4": 32 * GiB,
    "tpu v5 lite": 16 * GiB,  # v5e
    "tpu v5e": 16 * GiB,
    "tpu v5p": 95 * GiB,
    "tpu v5": 95 * GiB,
    "tpu v6 lite": 32 * GiB,  # v6e (Trillium)
    "tpu v6e": 32 * GiB,
    "a100": 80 * GiB,  # the 80 GB part; the 40 GB A100 has half
    "h100": 80 * GiB,
    "h200": 141 * GiB,
}


def device_name(kind: str) -> str:
    """ "tpu-v5p" and "TPU v5p" both become "tpu v5p", the spelling of jax's device_kind and of the tables."""
    return kind.lower().replace("-", " ").replace("_", " ")


def hbm_bytes(kind: str) -> float | None:
    name = device_name(kind)
    for key in sorted(HBM_BYTES, key=len, reverse=True):
        if key in name:
            return HBM_BYTES[key]
    return None
