"""Resolve a spec into runs: one ordinary meshlm Config per (budget, shape, seed), its id and its FLOP accounting."""

import dataclasses
import hashlib
import json
import math

from meshlm.experiments.sweep.accounting import Accounting, account, flop_params
from meshlm.experiments.sweep.spec import AutoShapes, Budget, Shape, Spec
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.training import config as config_lib
from meshlm.training import data_fingerprint
from meshlm.training.config import OptimizerConfig
from meshlm.training.data_config import DataConfig

VOCAB_MULTIPLE = 128  # the model's table is padded so the head matmul tiles well; the padding's FLOPs are counted


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: config_lib.Config
    budget: float  # the requested compute; accounting.compute is what the whole steps give (within 1/steps)
    holdout: bool
    accounting: Accounting


def run_id(cfg: config_lib.Config, data: str | None = None) -> str:
    """A hash of the resolved config's settings that differ from the defaults and of the data they read (`data`:
    its fingerprint, computed when not given): the same spec on the same data gives the same ids on any machine, in
    any run order, and after an upgrade that adds an option (at its default), so finished runs are still found;
    edited data gives new ones."""
    changed = _not_default(config_lib.to_dict(cfg), config_lib.to_dict(config_lib.Config()))
    changed["data_fingerprint"] = data_fingerprint.fingerprint(cfg.data) if data is None else data
    text = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _not_default(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            value = _not_default(value, default)
            if value:
                out[key] = value
        elif value != default or key not in defaults:
            out[key] = value
    return out


def resolve(spec: Spec) -> list[PlannedRun]:
    """Every run of the sweep, hold-outs last, by budget then size; a config listed twice runs once."""
    base = _base_config(spec)
    data = data_fingerprint.fingerprint(base.data)  # once: every run reads the same data
    runs: dict[str, PlannedRun] = {}
    for holdout, budgets in ((False, spec.budgets), (True, spec.holdout)):
        for budget in budgets:
            for shape in _shapes(spec, budget, base):
                for seed in budget.seeds or spec.seeds:
                    run = _run(spec, base, data, budget.flops, shape, seed, holdout)
                    if run.run_id not in runs or holdout:
                        runs[run.run_id] = run
    return sorted(
        runs.values(), key=lambda r: (r.holdout, r.budget, r.accounting.params_flops, r.config.train.seed, r.run_id)
    )


def _base_config(spec: Spec) -> config_lib.Config:
    cfg = config_lib.from_preset(spec.preset, list(spec.overrides))
    unknown = sorted(set(spec.data) - {f.name for f in dataclasses.fields(DataConfig)})
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in the spec's data; known keys: "
            + ", ".join(f.name for f in dataclasses.fields(DataConfig))
        )
    data = config_lib.from_dict({**config_lib.to_dict(cfg)["data"], **spec.data}, DataConfig)
    vocab = -(-data.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    model = dataclasses.replace(cfg.model, vocab_size=vocab, n_ctx=spec.seq_len, d_head=0, dropout=0.0)
    return dataclasses.replace(cfg, model=model, data=data, mesh=MeshConfig(shape=spec.mesh))


def _model(base: config_lib.Config, spec: Spec, shape: Shape):
    heads = shape.n_heads or max(1, shape.d_model // spec.head_dim)
    return dataclasses.replace(base.model, d_model=shape.d_model, n_layers=shape.n_layers, n_heads=heads)


def _shapes(spec: Spec, budget: Budget, base: config_lib.Config) -> tuple[Shape, ...]:
    if budget.shapes:
        return budget.shapes
    if budget.auto or not spec.shapes:
        return auto_shapes(spec, budget.auto or spec.auto, budget.flops, base)
    return spec.shapes


def auto_shapes(spec: Spec, rule: AutoShapes, flops: float, base: config_lib.Config) -> tuple[Shape, ...]:
    """Shapes of the family d_model = k x width_multiple, n_layers = d_model / aspect whose FLOP-equivalent sizes are
    nearest to `count` targets log-spaced over `spread` around sqrt(C / (6 tokens_per_param))."""
    step = math.lcm(rule.width_multiple, spec.head_dim)
    family = [Shape(d, max(1, round(d / rule.aspect))) for d in range(step, 256 * step + 1, step)]
    sizes = [math.log(flop_params(_model(base, spec, s), spec.seq_len)) for s in family]
    centre = math.log(math.sqrt(flops / (6.0 * rule.tokens_per_param)))
    chosen: list[Shape] = []
    for i in range(rule.count):
        target = centre + math.log(rule.spread) * (i / max(rule.count - 1, 1) - 0.5)
        best = min(range(len(family)), key=lambda j: abs(sizes[j] - target))
        if family[best] not in chosen:
            chosen.append(family[best])
    return tuple(chosen)


def _run(
    spec: Spec, base: config_lib.Config, data: str, flops: float, shape: Shape, seed: int, holdout: bool
) -> PlannedRun:
    rules, T = spec.rules, spec.seq_len
    model = _model(base, spec, shape)
    n_flops = flop_params(model, T)
    tokens_wanted = flops / (6.0 * n_flops)
    step_tokens = min(max(tokens_wanted / rules.batch.target_steps, rules.batch.min_tokens), rules.batch.max_tokens)
    batch = 2 ** max(0, round(math.log2(step_tokens / T)))
    batch = max(rules.batch.multiple_of, batch - batch % rules.batch.multiple_of)
    steps = max(1, round(tokens_wanted / (batch * T)))
    warmup = round(rules.warmup.tokens_per_param * n_flops / (batch * T))
    warmup = min(max(warmup, rules.warmup.min_steps), max(1, int(rules.warmup.max_fraction * steps)))
    if spec.eval.sequences % batch:
        raise ConfigError(
            f"eval.sequences={spec.eval.sequences} is not a multiple of the {batch}-sequence batch of the "
            f"d_model={shape.d_model} run at {flops:.3g} FLOPs; use a multiple of {batch} so every run sees the same "
            "validation rows"
        )
    eval_every = max(1, steps // spec.eval.per_run)
    optimizer = OptimizerConfig(
        peak_lr=rules.lr.peak * (n_flops / rules.lr.at_params) ** rules.lr.exponent,
        schedule=rules.schedule,
        warmup_steps=warmup,
        min_lr_ratio=rules.min_lr_ratio,
        b1=rules.betas[0],
        b2=rules.betas[1],
        weight_decay=rules.weight_decay,
        grad_clip=rules.grad_clip,
    )
    # The rules set each run's length and batch: a preset's own token budget and batch ramp (GPT-3's) give way.
    train = dataclasses.replace(
        base.train,
        steps=steps,
        tokens=0,
        ramp_tokens=0,
        batch_size=batch,
        seq_len=T,
        micro_batches=1,
        seed=seed,
        log_every=eval_every,  # the trainer evaluates on logging steps
        eval_every=eval_every,
        eval_batches=spec.eval.sequences // batch,
        checkpoint_every=max(1, math.ceil(steps / spec.checkpoints_per_run)),
        keep_checkpoints=1,
        optimizer=optimizer,
    )
    cfg = dataclasses.replace(base, model=model, train=train).validate()
    return PlannedRun(
        run_id=run_id(cfg, data),
        config=cfg,
        budget=flops,
        holdout=holdout,
        accounting=account(model, T, steps * batch * T),
    )
