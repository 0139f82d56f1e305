"""A kernel outside meshlm's folder, named by its import path: `reference` on values scaled by two."""

from meshlm.model import attention


@attention.register_kernel("test_doubled_values", exact=False)
def attend(q_BHTK, k_BGSK, v_BGSK, mask):
    return attention.kernel("reference")(q_BHTK, k_BGSK, 2.0 * v_BGSK, mask)
