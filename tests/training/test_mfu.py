"""training/mfu.py and parallel/hardware.py: the peak MFU is measured against (data sheet, or the fastest CPU
matmul over a minimum number of runs and time), and the MFU the trainer logs."""

import types

import pytest

from meshlm.parallel import hardware
from meshlm.training import metrics as metrics_lib
from meshlm.training import mfu
from meshlm.training import trainer as trainer_lib
from tests.training.helpers import quiet, small_config, text_corpus, tick_train_calls


def test_matmul_peak_is_the_fastest_run_and_keeps_timing_until_the_time_floor():
    # began, then (start, end) per run; after the two required runs the loop checks the clock (0.6 < 1.0: go on),
    # runs once more, checks again (1.0: stop). The last value must be left unread.
    ticks = iter([0.0, 0.0, 0.5, 0.5, 0.6, 0.6, 0.6, 0.8, 1.0, 99.0])
    peak = mfu.measure_matmul_peak(n=8, min_repeats=2, min_seconds=1.0, clock=lambda: next(ticks))
    assert peak == pytest.approx(2 * 8**3 / 0.1)
    assert next(ticks) == 99.0


# -- the accelerator table, on device kinds as jax.Device.device_kind spells them --------------------------------

T = 1e12
# Dense bf16 peaks per chip from the vendors' data sheets, written out here rather than read from the table.
DATA_SHEET_BF16 = {
    "TPU v4": 275 * T,
    "TPU v5 lite": 197 * T,  # v5e
    "TPU v5p": 459 * T,
    "TPU v6 lite": 918 * T,  # v6e (Trillium)
    "NVIDIA A100-SXM4-80GB": 312 * T,
    "NVIDIA A100-SXM4-40GB": 312 * T,
    "NVIDIA H100 80GB HBM3": 989 * T,  # SXM
    "NVIDIA H200": 989 * T,
}


@pytest.mark.parametrize("kind", DATA_SHEET_BF16)
def test_device_kinds_map_to_their_data_sheet_peak(kind):
    chip = hardware.lookup(kind)
    assert chip is not None and chip.peak("bfloat16") == DATA_SHEET_BF16[kind]


@pytest.mark.parametrize("kind", ["cpu", "TPU v3", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", ""])
def test_unknown_device_kinds_have_no_entry(kind):
    assert hardware.lookup(kind) is None


def test_device_peak_is_the_data_sheet_peak_times_the_devices_or_a_measured_one(monkeypatch):
    peak, source = mfu.device_peak([types.SimpleNamespace(device_kind="TPU v5 lite")] * 4)
    assert peak == 4 * 197 * T and "data sheet" in source
    measured = iter([1.5e11, 9e11])
    monkeypatch.setattr(mfu, "measure_matmul_peak", lambda: next(measured))
    mfu._machine_peak.cache_clear()
    try:
        for devices in (8, 1):  # simulated CPU devices share one machine's cores, measured once per process
            peak, source = mfu.device_peak([types.SimpleNamespace(device_kind="cpu")] * devices)
            assert peak == 1.5e11 and "measured" in source
    finally:
        mfu._machine_peak.cache_clear()


# -- the MFU the trainer logs --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_logged_mfu_is_the_model_flops_per_second_over_the_peak(tmp_path, monkeypatch):
    """A clock that moves only inside train calls, 10 s a step, and a peak of 10 MFLOP/s: every record's MFU is the
    training FLOPs of a step, counted here by hand, over 10 s, over the peak."""
    clock, peak = [0.0], 1e7
    monkeypatch.setattr(trainer_lib, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(trainer_lib, "device_peak", lambda devices: (peak, "fixed for the test"))
    cfg = small_config(text_corpus(tmp_path), tmp_path, steps=4)
    trainer = trainer_lib.Trainer(cfg, tmp_path / "run", log=quiet)

    tick_train_calls(trainer, clock)
    trainer.run(progress=False)
    # small_config: 2 layers, d_model 32, GELU MLP of 4 d, vocab 384, tied head, batch 4 x 32 tokens. Per token:
    # 6 FLOPs (forward 2, backward 4) per weight it multiplies (4 d^2 attention + 8 d^2 MLP per layer, d x vocab
    # head) and 3 x (QK^T and AV: 2 x 2 x T x d per layer).
    L, d, V, T_, B = 2, 32, 384, 32, 4
    per_token = 6 * (L * 12 * d * d + d * V) + 3 * L * 2 * 2 * T_ * d
    step_flops = per_token * B * T_
    records = metrics_lib.read(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert r["mfu"] == pytest.approx(step_flops / 10.0 / peak, rel=1e-12)
