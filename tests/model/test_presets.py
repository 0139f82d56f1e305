import pytest

from meshlm.model import flops, presets


@pytest.mark.parametrize("name", list(presets.GPT3_TABLE))
def test_gpt3_parameter_count_within_two_percent_of_the_paper(name):
    count = flops.count_params(presets.get(name))  # shapes only: nothing is allocated
    assert abs(count.total / presets.paper_params(name) - 1) < 0.02


@pytest.mark.parametrize("name", list(presets.GPT3_TABLE))
def test_gpt3_shapes_follow_table_2_1(name):
    L, D, H, K, _ = presets.GPT3_TABLE[name]
    cfg = presets.get(name)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.n_ctx) == (L, D, H, K, 2048)
    assert cfg.vocab_size % 128 == 0 and cfg.vocab_size - 50257 < 128


def test_param_count_matches_the_closed_form():
    cfg = presets.get("gpt3-small")
    D, L, V, T = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.n_ctx
    per_layer = 4 * D * D + 4 * D + 2 * 4 * D * D + 4 * D + D + 4 * D  # qkv+out weights/biases, mlp, two layernorms
    assert flops.count_params(cfg).total == V * D + T * D + L * per_layer + 2 * D


def test_flops_per_token_is_six_n_plus_attention():
    cfg = presets.get("gpt3-175b")
    f = flops.flops_per_token(cfg)
    n_matmul = (
        flops.count_params(cfg).non_embedding
        - cfg.n_layers * 13 * cfg.d_model
        - 2 * cfg.d_model
        + cfg.vocab_size * cfg.d_model
    )
    assert f.matmul == pytest.approx(6 * n_matmul, rel=1e-9)
    assert f.attention == 6 * 2 * 96 * 2048 * 12288


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'gpt5'.*gpt3-175b"):
        presets.get("gpt5")
