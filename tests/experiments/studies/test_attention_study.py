"""The attention study on a one-layer model for two steps: like is compared with like, seeds differ, and the table's
columns are what they claim."""

import json

import pytest

from meshlm.experiments.studies import attention as study
from meshlm.model import attention
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib

MICRO = [
    "model.n_layers=1",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.eval_batches=1",
]


@pytest.mark.slow
def test_an_exact_kernel_trains_as_mha_does_and_seeds_change_the_losses(tmp_path, capsys):
    study.main(
        ["--steps", "2", "--seeds", "2", "--out", str(tmp_path), "--only", "kernel=blockwise", "--only", "layer=gqa"]
        + [f"--set={o}" for o in MICRO]
    )
    rows = {r["variant"]: r for r in json.loads((tmp_path / "study.json").read_text())}
    assert list(rows) == ["layer=mha", "layer=gqa", "kernel=blockwise"]  # the baseline always runs, first
    mha, gqa, blockwise = rows["layer=mha"], rows["layer=gqa"], rows["kernel=blockwise"]
    assert mha["val_losses"][0] != mha["val_losses"][1] and mha["spread"] > 0
    assert blockwise["val_losses"] == pytest.approx(mha["val_losses"], abs=1e-5)
    assert not study.separated(blockwise, mha)
    assert gqa["cache_bytes_per_token"] == mha["cache_bytes_per_token"] / 2  # 2 of 4 key/value heads
    assert gqa["memory_bytes"] < mha["memory_bytes"]  # smaller k/v projections and their optimizer state
    assert len({r["tokens"] for r in rows.values()}) == 1
    assert capsys.readouterr().out.count("| layer=") == 2


def test_the_study_takes_every_layer_and_the_kernels_written_for_the_platform():
    rows = study.variants(config_lib.from_preset("tiny"))
    layers = {r.removeprefix("layer=") for r in rows if r.startswith("layer=")}
    kernels = {r.removeprefix("kernel=") for r in rows if r.startswith("kernel=")}
    assert next(iter(rows)) == study.BASELINE and layers == set(attention.layer_names())
    assert {"mha", "gqa", "sliding_window", "gpt3_sparse", "mla"} <= layers
    # tiny's kernel is `reference`: the baseline row; Pallas kernels for TPU and GPU are only emulated on CPU.
    assert {"blocked", "blockwise", "fused", "linear", "softcap"} <= kernels
    assert not kernels & {"reference", "splash", "pallas_flash"}


def test_an_unknown_row_is_refused_naming_the_rows(tmp_path):
    with pytest.raises(ConfigError, match=r"--only layer=gqq: no such row; the rows here are layer=mha, .*layer=gqa"):
        study.study("tiny", 2, 1, tmp_path, [], only=["layer=gqq"])
    assert not any(tmp_path.iterdir())  # refused before anything trained


def test_separated_means_the_seeds_losses_do_not_overlap():
    base = dict(val_losses=[3.00, 3.04])
    assert study.separated(dict(val_losses=[3.05, 3.06]), base)
    assert study.separated(dict(val_losses=[2.90, 2.99]), base)
    assert not study.separated(dict(val_losses=[3.03, 3.10]), base)
