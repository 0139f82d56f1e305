"""The GPT-3 recipe as the presets' defaults: `meshlm info` shows it, `meshlm plan` plans its batch."""

import json

import pytest

from meshlm.experiments.cli import main
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib


def test_info_shows_the_13b_recipe_and_its_compute_next_to_table_d_1(capsys):
    assert main(["info", "--preset", "gpt3-13b"]) == 0
    out = capsys.readouterr().out
    # Table 2.1: batch 2M tokens, LR 1.0e-4; 300B tokens; Table D.1: 2.31e22 FLOPs, 268 PF-days.
    assert "1024 x 2048 = 2,097,152 tokens per step" in out and "[paper: 2M]" in out
    assert "peak 1.0e-4   [paper: 1.0e-4]" in out
    assert "300B tokens in 159,375 steps" in out
    assert "Table D.1      2.31e+22 FLOPs = 268 PF-days" in out
    assert "6 x params x tokens = 2.31e+22 FLOPs = 268 PF-days" in out


def test_info_json_compute_is_near_table_d_1(capsys):
    assert main(["info", "--preset", "gpt3-175b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["paper_pf_days"] == 3.64e3
    assert abs(out["train_flops_paper_method"] / 8.64e19 / 3.64e3 - 1) < 0.01
    # With attention (96 x 12 x 2048 x 12288 FLOPs per token over 6 x 174.6B), ours is 2.8% above.
    assert out["train_flops"] / out["train_flops_paper_method"] == pytest.approx(1.028, abs=0.002)
    assert out["config"]["train"]["batch_size"] == 1536 and out["train_steps"] == 111_355


def test_overrides_keep_the_token_budget():
    cfg = config_lib.from_preset("gpt3-small", ["train.batch_size=512"]).validate()
    assert cfg.train.tokens == 300_000_000_000 and (cfg.train.ramp_tokens, cfg.train.ramp_batch) == (4 * 10**9, 16)
    assert config_lib.from_preset("gpt3-xl", ["train.batch_size=8"]).validate()  # a benchmark's batch: no ramp
    short = config_lib.from_preset("gpt3-small", ["train.steps=100", "train.tokens=0"]).validate()
    assert short.train.steps == 100
    with pytest.raises(ConfigError, match="set exactly one of them"):
        config_lib.from_preset("gpt3-small", ["train.steps=100"]).validate()


def test_small_presets_keep_their_defaults():
    t = config_lib.from_preset("tiny").validate().train
    assert (t.steps, t.tokens, t.ramp_tokens, t.optimizer.warmup_steps, t.optimizer.on_tokens) == (300, 0, 0, 30, False)


# The full step as accumulation of ramp chunks: 16 sequences span 8 devices; 128 need chunks of 128.
@pytest.mark.parametrize("mesh, chips, micro_batches", [("data=8", 8, 96), ("data=8,fsdp=-1,tensor=8", 1024, 12)])
def test_plan_uses_the_presets_batch(mesh, chips, micro_batches, capsys):
    argv = ["plan", "--preset", "gpt3-175b", "--mesh", mesh, "--chips", str(chips), "--device", "h100"]
    assert main(argv + ["--xla", "off", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["batch"], out["micro_batches"]) == (1536, micro_batches)


def test_plan_with_an_explicit_batch_plans_that_plain_batch(capsys):
    argv = ["plan", "--preset", "gpt3-xl", "--mesh", "fsdp=8", "--device", "h100", "--batch", "64", "--xla", "off"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["batch"], out["micro_batches"]) == (64, 1)
