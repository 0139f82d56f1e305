"""Blockwise attention's memory claim, from XLA's memory analysis of the compiled forward and backward pass."""

import pytest

from meshlm.experiments.bench.attention_memory import attention_memory, peak_bytes


@pytest.mark.slow
def test_blockwise_peak_memory_is_at_most_a_quarter_of_reference_at_8192():
    r = attention_memory(8192)
    # reference holds [heads, T, T] f32 logits and probabilities: at least 2 x 4 x 8192^2 x 4 bytes.
    assert r["against_bytes"] >= 2 * 4 * 8192**2 * 4
    assert r["ratio"] <= 0.25, r


@pytest.mark.slow
def test_blockwise_memory_grows_linearly():
    small, large = peak_bytes("blockwise", 2048), peak_bytes("blockwise", 8192)
    assert large / small < 4 * 1.25  # 4x the tokens: at most ~4x the memory (reference's grows ~16x)
