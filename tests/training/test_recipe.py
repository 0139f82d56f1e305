import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from meshlm.model import presets
from meshlm.model.errors import ConfigError
from meshlm.training import optimizer as optimizer_lib
from meshlm.training import recipe
from meshlm.training.config import OptimizerConfig, TrainConfig

# Brown et al. (2020), Table 2.1: batch size in tokens and learning rate; "all models were trained for a total of
# 300 billion tokens". Next to each, the batch in sequences of 2048 we train: 0.5M, 1M and 2M read as binary
# (2^19, 2^20, 2^21 tokens); 3.2M as 1536 sequences (3.15M tokens), as in Megatron-LM's and Megatron-DeepSpeed's
# GPT-3 example configs.
TABLE_2_1 = {
    "gpt3-small": (0.5e6, 6.0e-4, 256),
    "gpt3-medium": (0.5e6, 3.0e-4, 256),
    "gpt3-large": (0.5e6, 2.5e-4, 256),
    "gpt3-xl": (1e6, 2.0e-4, 512),
    "gpt3-2.7b": (1e6, 1.6e-4, 512),
    "gpt3-6.7b": (2e6, 1.2e-4, 1024),
    "gpt3-13b": (2e6, 1.0e-4, 1024),
    "gpt3-175b": (3.2e6, 0.6e-4, 1536),
}
# Table D.1: total train compute in PF-days and in FLOPs (6 x params x 300B tokens, attention left out).
TABLE_D_1 = {
    "gpt3-small": (2.60e0, 2.25e20),
    "gpt3-medium": (7.42e0, 6.41e20),
    "gpt3-large": (1.58e1, 1.37e21),
    "gpt3-xl": (2.75e1, 2.38e21),
    "gpt3-2.7b": (5.52e1, 4.77e21),
    "gpt3-6.7b": (1.39e2, 1.20e22),
    "gpt3-13b": (2.68e2, 2.31e22),
    "gpt3-175b": (3.64e3, 3.14e23),
}
S = 2048  # n_ctx: "we always train on sequences of the full n_ctx = 2048 token context window" (Appendix B)


def paper_lr(tokens: float, peak: float) -> float:
    """Appendix B: linear warmup over 375M tokens, cosine to 10% of the peak by 260B tokens, then constant."""
    if tokens < 375e6:
        return peak * tokens / 375e6
    progress = min(1.0, (tokens - 375e6) / (260e9 - 375e6))
    return 0.1 * peak + 0.9 * peak * 0.5 * (1 + math.cos(math.pi * progress))


def simulate(batch: int, ramp: float, budget: float, start: int = 16):
    """Step by step (Megatron-LM's rule): the batch is `start` sequences plus `start` more for every 1/(batch/start - 1)
    of the ramp consumed, until full. Yields (step, sequences in the step, tokens consumed before it)."""
    increments = batch // start - 1
    step, consumed = 0, 0
    while consumed < budget:
        sequences = batch if consumed >= ramp else start + start * (consumed * increments // ramp)
        yield step, sequences, consumed
        step, consumed = step + 1, consumed + sequences * S


@pytest.mark.parametrize("name", list(TABLE_2_1))
def test_each_preset_carries_table_2_1(name):
    batch_tokens, lr, sequences = TABLE_2_1[name]
    t = recipe.train_config(name)
    assert t.batch_size == sequences and abs(t.batch_size * S / batch_tokens - 1) < 0.05
    assert t.optimizer.peak_lr == lr
    assert t.tokens == 300e9 and t.steps == 0


@pytest.mark.parametrize("name", list(TABLE_2_1))
def test_each_preset_carries_appendix_b(name):
    t = recipe.train_config(name)
    opt = t.optimizer
    assert (opt.b1, opt.b2, opt.eps, opt.grad_clip, opt.weight_decay) == (0.9, 0.95, 1e-8, 1.0, 0.1)
    assert (opt.warmup_tokens, opt.decay_tokens, opt.min_lr_ratio, opt.schedule) == (375e6, 260e9, 0.1, "cosine")
    assert opt.warmup_steps == 0
    # The ramp starts at 32k tokens (16 sequences of 2048) and reaches the full batch within 4-12B tokens.
    assert t.ramp_batch * S == 32768 and t.micro_batches == 1
    assert 4e9 <= t.ramp_tokens <= 12e9


def test_ramp_lengths_interpolate_the_papers_range_by_log_size():
    # The paper gives only "4-12 billion tokens ... depending on the model size": Small 4B, 175B 12B, and between
    # them linear in log(parameters), rounded to 0.5B (our choice, docs/presets.md). Worked by hand from Table 2.1's
    # sizes, e.g. XL: 4 + 8 ln(1.3B / 125M) / ln(175B / 125M) = 4 + 8 x 2.342 / 7.244 = 6.59 -> 6.5.
    by_hand = {
        "gpt3-small": 4.0,
        "gpt3-medium": 5.0,  # 5.14
        "gpt3-large": 6.0,  # 5.99
        "gpt3-xl": 6.5,
        "gpt3-2.7b": 7.5,  # 7.39
        "gpt3-6.7b": 8.5,  # 8.40
        "gpt3-13b": 9.0,  # 9.13
        "gpt3-175b": 12.0,
    }
    assert by_hand.keys() == TABLE_2_1.keys()
    for name, billions in by_hand.items():
        assert recipe.train_config(name).ramp_tokens == billions * 1e9, name


def test_other_presets_keep_their_step_based_defaults():
    assert recipe.train_config("tiny") is None and recipe.train_config("cpu-small") is None


def test_small_ramp_by_hand():
    plan = recipe.step_plan(recipe.train_config("gpt3-small"), S)
    # 256 / 16 = 16 chunks of 16: 15 increments, one every 4B / 15 = 266,666,666.7 tokens; the first stage runs
    # ceil(266,666,666.7 / 32,768) = 8,139 steps of 16 sequences.
    assert plan.chunk == 16
    assert [plan.batch_size_at(s) for s in (0, 8138, 8139)] == [16, 16, 32]
    assert plan.tokens_at(1) == 32768 and plan.tokens_at(8139) == 8139 * 32768
    # Without the ramp: ceil(300e9 / 524,288) = 572,205 steps; twice the batch halves them: ceil(300e9 / 2^20).
    flat = dataclasses.replace(recipe.train_config("gpt3-small"), ramp_tokens=0)
    assert recipe.step_plan(flat, S).total_steps == 572_205
    assert recipe.step_plan(dataclasses.replace(flat, batch_size=512), S).total_steps == 286_103


def test_a_batch_no_larger_than_the_ramps_start_has_no_ramp():
    plan = recipe.step_plan(dataclasses.replace(recipe.train_config("gpt3-small"), batch_size=8), S)
    assert plan.chunk == 8 and plan.batch_size_at(0) == 8 and plan.total_steps == math.ceil(300e9 / (8 * S))


@pytest.mark.parametrize("name", list(TABLE_2_1))
def test_plan_follows_a_step_by_step_simulation_of_the_ramp(name):
    t = recipe.train_config(name)
    plan = recipe.step_plan(t, S)
    last = None
    for step, sequences, consumed in simulate(t.batch_size, t.ramp_tokens, t.tokens):
        if last is None or sequences != last[1] or step % 97 == 0:  # every batch change, and samples between
            assert (plan.batch_size_at(step), plan.tokens_at(step)) == (sequences, consumed), step
        last = (step, sequences, consumed)
    assert plan.total_steps == last[0] + 1
    assert plan.tokens_at(plan.total_steps) >= 300e9 > plan.tokens_at(plan.total_steps - 1)


@pytest.mark.parametrize("budget", [10**9, 4_000_317_440, 4_000_317_441])  # inside the ramp, at its end, one past
def test_a_budget_that_ends_near_or_inside_the_ramp(budget):
    t = dataclasses.replace(recipe.train_config("gpt3-small"), tokens=budget)
    assert recipe.step_plan(t, S).total_steps == len(list(simulate(t.batch_size, t.ramp_tokens, budget)))


def test_a_changed_batch_keeps_the_token_budget():
    base = recipe.train_config("gpt3-xl")
    for batch in (512, 256, 1024):
        plan = recipe.step_plan(dataclasses.replace(base, batch_size=batch), S)
        assert plan.tokens_at(plan.total_steps) - 300e9 < batch * S
        assert plan.tokens_at(plan.total_steps) >= 300e9


@pytest.mark.parametrize("name", ["gpt3-small", "gpt3-13b", "gpt3-175b"])
def test_learning_rate_follows_appendix_b_on_the_token_clock(name):
    t = recipe.train_config(name)
    schedule = jax.jit(recipe.learning_rate_schedule(t, S))
    peak = t.optimizer.peak_lr
    steps = list(simulate(t.batch_size, t.ramp_tokens, t.tokens))
    warm_end = next(s for s, _, c in steps if c >= 375e6)
    decay_end = next(s for s, _, c in steps if c >= 260e9)
    middle = next(s for s, _, c in steps if c >= (375e6 + 260e9) / 2)
    for step in (0, 1, 1000, warm_end - 1, warm_end, middle, decay_end - 1, decay_end, len(steps) - 1):
        expected = paper_lr(steps[step][2], peak)
        assert float(schedule(jnp.int32(step))) == pytest.approx(expected, abs=1e-6 * peak), step
    assert float(schedule(jnp.int32(middle))) == pytest.approx(0.55 * peak, rel=1e-3)  # half way down the cosine
    assert float(schedule(jnp.int32(len(steps) - 1))) == pytest.approx(0.1 * peak, rel=1e-6)


def test_small_learning_rate_at_the_first_batch_change_by_hand():
    schedule = recipe.learning_rate_schedule(recipe.train_config("gpt3-small"), S)
    # 8,139 steps of 32,768 tokens = 266,698,752 tokens, 71.1% of the warmup.
    assert float(schedule(8139)) == pytest.approx(6e-4 * 266_698_752 / 375e6, rel=1e-5)


def test_step_based_configs_keep_the_step_schedule():
    t = TrainConfig(steps=50, batch_size=8, optimizer=OptimizerConfig(peak_lr=1e-3, warmup_steps=5))
    ours, steps_only = recipe.learning_rate_schedule(t, 128), optimizer_lib.learning_rate_schedule(t.optimizer, 50)
    assert [float(ours(s)) for s in range(51)] == [float(steps_only(s)) for s in range(51)]
    plan = recipe.step_plan(t, 128)
    assert plan.total_steps == 50 and plan.batch_size_at(49) == 8 and plan.tokens_at(50) == 50 * 8 * 128


def test_a_ramp_on_a_step_budget_gives_the_same_batches():
    t = recipe.train_config("gpt3-medium")
    by_tokens, by_steps = recipe.step_plan(t, S), recipe.step_plan(dataclasses.replace(t, steps=40_000, tokens=0), S)
    assert by_steps.total_steps == 40_000
    assert all(by_steps.batch_size_at(s) == by_tokens.batch_size_at(s) for s in range(0, 40_000, 313))


@pytest.mark.parametrize("name", list(TABLE_D_1))
def test_training_compute_within_ten_percent_of_table_d_1(name):
    pf_days, paper_flops = TABLE_D_1[name]
    assert paper_flops / recipe.PF_DAY == pytest.approx(pf_days, rel=0.01)  # the table agrees with itself
    compute = recipe.training_compute(presets.get(name), recipe.train_config(name), S)
    assert abs(compute.tokens / 300e9 - 1) < 1e-4
    # The paper's method on our shapes: 6 x our parameters x our tokens.
    assert abs(compute.paper_count / paper_flops - 1) < 0.10
    assert abs(compute.paper_count / recipe.PF_DAY / pf_days - 1) < 0.10
    # Our weight matmuls alone (no biases, norms or position table; the tied head counted) are the same count.
    assert abs(compute.matmul / paper_flops - 1) < 0.10
    # Attention (full square, 6 x 2 x L x T x d_attn per token) is what ours adds on top: +3% for 175B, +29% for Small.
    L, D = presets.get(name).n_layers, presets.get(name).n_heads * presets.get(name).head_dim
    assert compute.attention == 12 * L * S * D * compute.tokens


def test_fit_to_mesh_keeps_the_batch_and_widens_the_ramps_chunk():
    t = recipe.train_config("gpt3-175b")  # 1536 sequences, ramped 16 at a time
    assert recipe.fit_to_mesh(t, 8) == t
    wide = recipe.fit_to_mesh(t, 128)  # 16 sequences cannot span 128 devices: chunks of 128
    assert (wide.batch_size, wide.ramp_batch, wide.ramp_tokens) == (1536, 128, t.ramp_tokens)
    assert recipe.fit_to_mesh(dataclasses.replace(t, micro_batches=2), 128).ramp_batch == 256
    for devices in (1536, 1024):  # no chunk smaller than the batch spans them: no ramp
        assert recipe.fit_to_mesh(t, devices).ramp_tokens == 0


def test_as_accumulation_counts_every_chunks_micro_batches():
    t = recipe.train_config("gpt3-175b")
    assert (recipe.as_accumulation(t).micro_batches, recipe.as_accumulation(t).ramp_tokens) == (96, 0)
    wide = recipe.as_accumulation(dataclasses.replace(t, ramp_batch=128, micro_batches=4))
    assert (wide.batch_size, wide.micro_batches) == (1536, 48)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(steps=100), "set exactly one of them"),
        (dict(tokens=0), "set exactly one of them"),
        (dict(batch_size=264), "batch_size=264 is not a multiple of train.ramp_batch=16"),
        (dict(micro_batches=3), "micro_batches=3 does not divide train.ramp_batch=16"),
        (dict(ramp_tokens=-1), "ramp_tokens=-1 must not be negative"),
    ],
)
def test_bad_run_length_and_ramp_settings_name_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        recipe.step_plan(dataclasses.replace(recipe.train_config("gpt3-small"), **changes), S)


def test_warmup_in_steps_and_tokens_at_once_is_refused():
    t = recipe.train_config("gpt3-small")
    with pytest.raises(ConfigError, match="warmup_steps=10 and warmup_tokens=375000000 both set the warmup"):
        recipe.check(dataclasses.replace(t, optimizer=dataclasses.replace(t.optimizer, warmup_steps=10)))
