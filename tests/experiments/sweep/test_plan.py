"""Resolving a spec: FLOP accounting against independent counts, run-id stability, the derived hyper-parameters."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer

SPEC = {
    "name": "p",
    "data": {"vocab_size": 300},
    "seq_len": 64,
    "head_dim": 8,
    "budgets": [1e10, 1e11],
    "shapes": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 2}, {"d_model": 48, "n_layers": 3}],
    "seeds": [0, 1],
    "holdout": [{"flops": 1e12, "shapes": [{"d_model": 64, "n_layers": 4}]}],
}


def _runs(**changes):
    return plan_lib.resolve(spec_lib.parse({**SPEC, **changes}))


def test_flop_accounting_matches_a_count_by_hand():
    for run in _runs():
        m, a, T = run.config.model, run.accounting, run.config.seq_len
        d, L, V = m.d_model, m.n_layers, m.vocab_size
        assert V == 384  # data.vocab_size 300, padded to a multiple of 128
        # GPT-2 block with biases: qkv + out projections, 4x MLP, two LayerNorms (scale and bias).
        block = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d
        assert a.params_total == V * d + T * d + L * block + 2 * d
        assert a.params_non_embedding == L * block + 2 * d
        # Forward: 2 FLOPs per weight multiply (blocks and the tied head), QK^T and AV over the full square.
        forward = 2 * (L * 12 * d * d + d * V) + 2 * 2 * L * T * d
        assert a.flops_per_token == 3 * forward
        assert a.compute == 6 * a.params_flops * a.tokens
        assert a.tokens == run.config.train.steps * run.config.train.batch_size * T
        assert abs(a.compute / run.budget - 1) <= 0.5 / run.config.train.steps + 1e-12


@pytest.mark.parametrize("d_model", [64, 128])
def test_forward_flops_agree_with_xla_cost_analysis(d_model):
    """XLA's count of one forward pass (matmuls and elementwise work) is within 5% of a third of ours. One layer:
    XLA counts the body of the scan over layers once."""
    shape = {"d_model": d_model, "n_layers": 1}
    run = _runs(budgets=[1e12], shapes=[shape], seeds=[0], holdout=[])[0]
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(run.config.model, nnx.Rngs(0))))
    tokens = jax.ShapeDtypeStruct((1, run.config.seq_len), jnp.int32)
    cost = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)).lower(state, tokens).compile()
    cost = cost.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert 0.97 < cost["flops"] / (run.accounting.flops_per_token / 3 * run.config.seq_len) < 1.05


@pytest.mark.slow
def test_run_ids_are_stable_across_processes_and_orderings():
    ids = [r.run_id for r in _runs()]
    assert len(set(ids)) == len(ids) == 2 * 3 * 2 + 2  # budgets x shapes x seeds, and the hold-out's seeds
    reordered = _runs(budgets=[1e11, 1e10], shapes=SPEC["shapes"][::-1], seeds=[1, 0])
    assert sorted(r.run_id for r in reordered) == sorted(ids)
    code = (
        "import json; from meshlm.experiments.sweep import plan, spec; "
        f"print(json.dumps([r.run_id for r in plan.resolve(spec.parse({SPEC!r}))]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == ids


def test_run_id_changes_with_anything_that_changes_the_run():
    base = {r.run_id for r in _runs()}
    assert {r.run_id for r in _runs(rules={"lr": {"peak": 1e-3}})}.isdisjoint(base)
    assert {r.run_id for r in _runs(data={"vocab_size": 256})}.isdisjoint(base)
    one = _runs(seeds=[0])
    assert {r.run_id for r in one} < base  # seed 1's runs are the only ones gone


def test_a_config_both_fitted_and_held_out_runs_once_tagged_holdout():
    runs = _runs(holdout=[{"flops": 1e11, "shapes": [{"d_model": 32, "n_layers": 2}]}])
    tagged = [r for r in runs if r.holdout]
    assert len(runs) == 12 and len(tagged) == 2  # two seeds of the 32x2 run at 1e11
    assert all(r.budget == 1e11 and r.config.model.d_model == 32 for r in tagged)


def test_derived_hyper_parameters_follow_the_rules():
    runs = _runs()
    spec = spec_lib.parse(SPEC)
    for r in runs:
        t, opt, n = r.config.train, r.config.train.optimizer, r.accounting.params_flops
        assert t.steps >= 20
        assert spec.rules.warmup.min_steps <= opt.warmup_steps or opt.warmup_steps == int(0.1 * t.steps)
        assert opt.warmup_steps <= max(1, int(0.1 * t.steps))
        assert (opt.b1, opt.b2) == (0.9, 0.99)
        # The rule 3e-3 (N / 1e5)^-0.33 worked by hand, e.g. d 16: N = 11,264, 3e-3 x 0.11264^-0.33 = 6.167e-3.
        by_hand = {16: (11_264, 6.167e-3), 32: (45_056, 3.903e-3), 48: (119_808, 2.826e-3), 64: (253_952, 2.206e-3)}
        assert (n, opt.peak_lr) == pytest.approx(by_hand[r.config.model.d_model], rel=1e-3)
        assert t.eval_batches * t.batch_size == spec.eval.sequences  # the same validation rows for every run
        assert opt.schedule == "cosine" and r.config.model.dropout == 0.0
    lrs = [r.config.train.optimizer.peak_lr for r in sorted(runs, key=lambda r: r.accounting.params_flops)]
    assert lrs == sorted(lrs, reverse=True)


def test_batch_gives_each_run_enough_steps_within_the_token_limits():
    runs = _runs(budgets=[1e12], rules={"batch": {"target_steps": 500, "min_tokens": 256, "max_tokens": 4096}})
    for r in runs:
        tokens_per_step = r.config.train.batch_size * r.config.seq_len
        assert 256 <= tokens_per_step <= 4096
        wanted = r.budget / (6 * r.accounting.params_flops) / 500
        if 256 < tokens_per_step < 4096:
            assert wanted / 2**0.5 <= tokens_per_step <= wanted * 2**0.5  # the nearest power of two


def test_auto_shapes_bracket_the_prior_optimum():
    spec = spec_lib.parse({**SPEC, "shapes": [], "holdout": [], "budgets": [1e13], "auto": {"count": 4, "spread": 8}})
    runs = [r for r in plan_lib.resolve(spec) if r.config.train.seed == 0]
    sizes = sorted(r.accounting.params_flops for r in runs)
    optimum = (1e13 / (6 * 20)) ** 0.5
    assert len(sizes) == 4 and sizes[0] < optimum < sizes[-1]
    assert 4 < sizes[-1] / sizes[0] < 16
    assert all(r.config.model.n_layers == max(1, round(r.config.model.d_model / 32)) for r in runs)


def test_eval_rows_that_a_batch_does_not_divide_are_refused():
    with pytest.raises(ConfigError, match="eval.sequences=100 is not a multiple"):
        _runs(eval={"sequences": 100})


def test_unknown_data_key_is_refused():
    with pytest.raises(ConfigError, match="unknown key 'vocab' in the spec's data"):
        _runs(data={"vocab": 256})


def test_resolved_runs_are_ordinary_configs():
    from meshlm.training import config as config_lib

    run = _runs()[0]
    again = config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(run.config))))
    assert again == run.config and plan_lib.run_id(again) == run.run_id
    assert dataclasses.replace(again, preset="x") != run.config
    assert np.isfinite(run.accounting.compute)


def test_an_option_added_at_its_default_keeps_every_run_id(monkeypatch):
    from meshlm.training import config as config_lib

    run = _runs()[0]
    to_dict = config_lib.to_dict
    # What a later meshlm looks like to the hash: every config, and the defaults, gain a field at its default.
    monkeypatch.setattr(config_lib, "to_dict", lambda cfg: {**to_dict(cfg), "new_option": 1})
    assert plan_lib.run_id(run.config) == run.run_id
    changed = dataclasses.replace(run.config, model=dataclasses.replace(run.config.model, scan_layers=False))
    assert plan_lib.run_id(changed) != run.run_id


@pytest.mark.parametrize("name", ["demo", "cpu-ladder", "gpu-ladder"])
def test_shipped_specs_resolve(name):
    path = os.path.join(os.path.dirname(plan_lib.__file__), "..", "sweeps", f"{name}.yaml")
    runs = plan_lib.resolve(spec_lib.load(path))
    fitted = [r for r in runs if not r.holdout]
    held = [r for r in runs if r.holdout]
    assert len({r.run_id for r in runs}) == len(runs) and held
    if name == "demo":
        # make demo shows branching: every fitted run and the hold-out a branch, each shape's trunk at 3 budgets
        assert {r.kind for r in runs} == {plan_lib.TRUNK, plan_lib.BRANCH} and held[0].kind == plan_lib.BRANCH
        per_trunk = {}
        for r in fitted:
            if r.kind == plan_lib.BRANCH:
                per_trunk.setdefault(r.parent, set()).add(r.budget)
        assert len(per_trunk) == 3 and all(len(b) == 3 for b in per_trunk.values())
        assert held[0].parent in per_trunk and held[0].budget == 2 * max(max(b) for b in per_trunk.values())
    if name == "cpu-ladder":
        # >= 3 budgets over more than a factor of 5, >= 12 runs; three hold-outs: a larger N at >= 4x the largest
        # fitted budget, a fitted shape at a larger budget (larger D), and a fitted run at another seed
        fitted = [r for r in fitted if r.kind != plan_lib.TRUNK]  # a trunk is no observation
        budgets = sorted({r.budget for r in fitted})
        assert len(budgets) >= 3 and budgets[-1] >= 5 * budgets[0] and len(fitted) >= 12
        shape = lambda r: (r.config.model.d_model, r.config.model.n_layers)  # noqa: E731
        fitted_runs = {(shape(r), r.budget, r.config.train.seed) for r in fitted}
        larger_n = [r for r in held if r.budget >= 4 * budgets[-1]]
        assert larger_n and all(
            r.accounting.params_flops > max(f.accounting.params_flops for f in fitted) for r in larger_n
        )
        assert any(r.budget > budgets[-1] and shape(r) in {shape(f) for f in fitted} for r in held)
        assert any((shape(r), r.budget, 0) in fitted_runs and r.config.train.seed != 0 for r in held)


def test_run_ids_fold_in_the_data_by_content(tmp_path):
    """Edited data gives new ids, so a run finished on the old text is never reused; files rewritten with the same
    text keep them; a given tokenizer counts by content too."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    data = {"vocab_size": 300, "source": f"text:{folder}/*.txt"}

    def write(doc1: str) -> list[str]:
        for i in range(3):
            (folder / f"doc{i}.txt").write_text(doc1 if i == 1 else f"document {i}: lord lady sword crown.\n")
        return [r.run_id for r in _runs(data=data)]

    original = write("document 1: lord lady sword crown.\n")
    assert write("document 1: lord lady sword crown.\n") == original
    assert set(write("the king. the king.\n")).isdisjoint(original)
    write("document 1: lord lady sword crown.\n")
    tokenizer = tmp_path / "tok.model"
    with_tokenizer = {}
    for content in (b"one", b"two"):
        tokenizer.write_bytes(content)
        with_tokenizer[content] = [r.run_id for r in _runs(data={**data, "tokenizer": str(tokenizer)})]
    assert set(with_tokenizer[b"one"]).isdisjoint(with_tokenizer[b"two"])
