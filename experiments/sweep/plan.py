"""Resolve a spec into runs: one ordinary meshlm Config per (budget, shape, seed), its id and its FLOP accounting."""

import dataclasses
import hashlib
import json
import math

from meshlm.experiments.sweep.accounting import Accounting, account, flop_params
from meshlm.experiments.sweep.powerlaw import PowerLaw
from meshlm.experiments.sweep.spec import AutoShapes, Budget, Shape, Spec
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.training import config as config_lib
from meshlm.training import data_fingerprint
from meshlm.training import optimizer as optimizer_lib
from meshlm.training.config import OptimizerConfig
from meshlm.training.data_config import DataConfig

VOCAB_MULTIPLE = 128  # the model's table is padded so the head matmul tiles well; the padding's FLOPs are counted


RUN, TRUNK, BRANCH, TUNE = "run", "trunk", "branch", "tune"
LR_DIGITS = 3  # a tuned LR's significant digits: a refit whose last bits differ on another machine keeps every id


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The tune stage's fitted rules (tune.py), which the main runs use instead of rules.lr and rules.batch."""

    lr: PowerLaw  # peak LR against N_flops
    batch: PowerLaw | None = None  # tokens per step against the run's budget C; None: rules.batch

    def peak_lr(self, n_flops: float) -> float:
        return float(f"{float(self.lr(n_flops)):.{LR_DIGITS}g}")


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: config_lib.Config
    budget: float  # the requested compute; accounting.compute is what the whole steps give (within 1/steps)
    holdout: bool
    accounting: Accounting
    # RUN: trained whole; TRUNK: a cooldown family's constant-LR part; BRANCH: one budget of it; TUNE: a point of the
    # tune stage's grid (trained whole, never an observation)
    kind: str = RUN
    parent: str = ""  # a branch's trunk (its run id)
    branch_step: int = 0  # a branch starts from its trunk's checkpoint of this step

    @property
    def trained_compute(self) -> float:
        """The FLOPs this run trains itself: a branch only its decay, since its trunk trained the steps before."""
        steps = self.config.train.steps
        return self.accounting.flops_per_token * (self.accounting.tokens // steps) * (steps - self.branch_step)


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


def resolve(spec: Spec, tuned: Tuned | None = None) -> list[PlannedRun]:
    """Every main run of the sweep, by budget then size, cooldown trunks first and hold-outs last; a config listed
    twice runs once. Under rules.schedule=cooldown each run of the grid is a branch of its (shape, seed)'s trunk.
    tuned: the tune stage's rules for the peak LR (and batch); None: the spec's rules (under a `tune:` section,
    provisional: the ids change once the tune stage has been fitted)."""
    base = _base_config(spec)
    data = data_fingerprint.fingerprint(base.data)  # once: every run reads the same data
    grid: dict[tuple, dict[float, bool]] = {}  # (model, seed) -> {budget: holdout}
    for holdout, budgets in ((False, spec.budgets), (True, spec.holdout)):
        for budget in budgets:
            for shape in _shapes(spec, budget, base):
                for seed in budget.seeds or spec.seeds:
                    at = grid.setdefault((_model(base, spec, shape), seed), {})
                    at[budget.flops] = at.get(budget.flops, False) or holdout
    family = _cooldown_family if spec.rules.schedule == "cooldown" else _independent_runs
    runs: dict[str, PlannedRun] = {}
    for (model, seed), budgets in grid.items():
        for run in family(spec, base, data, model, seed, budgets, tuned):
            if run.run_id not in runs or run.holdout:
                runs[run.run_id] = run
    return sorted(
        runs.values(),
        key=lambda r: (r.kind != TRUNK, r.holdout, r.budget, r.accounting.params_flops, r.config.train.seed, r.run_id),
    )


def resolve_tune(spec: Spec) -> list[PlannedRun]:
    """The tune stage: per tune shape and seed, a whole run of the tune budget at each LR of the grid (and each batch
    of batch_grid), by size, batch and LR; [] without a `tune:` section."""
    rule = spec.tune
    if rule is None:
        return []
    base = _base_config(spec)
    data = data_fingerprint.fingerprint(base.data)
    if rule.shapes:
        models = [_model(base, spec, shape) for shape in rule.shapes]
    else:  # every shape of the fitted budgets, once
        models = [_model(base, spec, shape) for budget in spec.budgets for shape in _shapes(spec, budget, base)]
    schedule = "wsd" if spec.rules.schedule == "cooldown" else spec.rules.schedule  # what a branch runs
    runs: dict[str, PlannedRun] = {}
    for model in dict.fromkeys(models):
        n_flops = flop_params(model, spec.seq_len)
        flops = rule.budget(n_flops)
        for batch in _tune_batches(spec, model, n_flops, flops):
            steps = _steps(spec, n_flops, flops, batch)
            warmup = _warmup(spec, n_flops, batch, steps)
            for peak_lr in rule.peak_lrs(rule_lr(spec, n_flops)):
                for seed in rule.seeds:
                    cfg = _config(spec, base, model, seed, batch, steps, warmup, flops, schedule, peak_lr)
                    rid = run_id(cfg, data)
                    runs[rid] = PlannedRun(rid, cfg, flops, False, _account(cfg), TUNE)
    return sorted(
        runs.values(),
        key=lambda r: (
            r.accounting.params_flops,
            r.config.train.batch_size,
            r.config.train.optimizer.peak_lr,
            r.config.train.seed,
        ),
    )


def _tune_batches(spec: Spec, model: ModelConfig, n_flops: float, flops: float) -> list[int]:
    """The batch of a tune run by the rules, or each multiple of it on tune.batch_grid (whole sequences)."""
    batch = _batch(spec, n_flops, flops)
    if not spec.tune.batch_grid:
        return [batch]
    out = []
    for multiple in spec.tune.batch_grid:
        sequences = multiple * batch
        if sequences != round(sequences) or round(sequences) % spec.rules.batch.multiple_of:
            raise ConfigError(
                f"tune.batch_grid {multiple} x the {batch}-sequence batch of d_model={model.d_model} is "
                f"{sequences:g} sequences, not a whole multiple of rules.batch.multiple_of="
                f"{spec.rules.batch.multiple_of}; use multipliers such as [0.5, 1, 2]"
            )
        out.append(round(sequences))
    return out


def as_json(runs: list[PlannedRun]) -> dict:
    """The plan as data (`meshlm sweep run --dry-run --json`), tune runs (stage "tune") and main runs (stage "main");
    total_flops is what the sweep trains, flops the same split by what it pays for."""
    rows = []
    for r in runs:
        m, a = r.config.model, r.accounting
        rows.append(
            {
                "id": r.run_id,
                "kind": r.kind,
                "stage": "tune" if r.kind == TUNE else "main",
                "shape": {"d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads},
                "N": a.params_flops,
                "D": a.tokens,
                "C": a.compute,
                "budget": r.budget,
                "holdout": r.holdout,
                "parent": r.parent or None,
                "branch_step": r.branch_step if r.parent else None,
                "steps": r.config.train.steps,
                "batch_size": r.config.train.batch_size,
                "peak_lr": r.config.train.optimizer.peak_lr,
                "trained_flops": r.trained_compute,
            }
        )
    return {"runs": rows, "total_flops": sum(r.trained_compute for r in runs), "flops": flops_by_part(runs)}


def flops_by_part(runs: list[PlannedRun]) -> dict[str, float]:
    """The FLOPs trained for the tune stage, for the fitted grid (its runs, or its branches and the trunk steps they
    start from) and for the hold-outs (the rest: their runs, branches and trunk steps past the last fitted branch).
    Comparing schedules, "fitted" is the grid's cost; tune stage and hold-outs cost about the same under either."""
    last_fitted = {}  # trunk id -> the last step a fitted branch starts from
    for r in runs:
        if r.kind == BRANCH and not r.holdout:
            last_fitted[r.parent] = max(last_fitted.get(r.parent, 0), r.branch_step)
    parts = {"tune": 0.0, "fitted": 0.0, "holdout": 0.0}
    for r in runs:
        if r.kind == TUNE:
            parts["tune"] += r.trained_compute
        elif r.kind == TRUNK:
            fitted = r.trained_compute * last_fitted.get(r.run_id, 0) / r.config.train.steps
            parts["fitted"] += fitted
            parts["holdout"] += r.trained_compute - fitted
        else:
            parts["holdout" if r.holdout else "fitted"] += r.trained_compute
    return parts


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


def _independent_runs(
    spec: Spec,
    base: config_lib.Config,
    data: str,
    model: ModelConfig,
    seed: int,
    budgets: dict[float, bool],
    tuned: Tuned | None,
) -> list[PlannedRun]:
    """cosine or wsd: one whole run per budget, its batch and warm-up sized for its own length."""
    runs = []
    n_flops = flop_params(model, spec.seq_len)
    peak_lr = tuned.peak_lr(n_flops) if tuned else rule_lr(spec, n_flops)
    for flops, holdout in budgets.items():
        batch = _batch(spec, n_flops, flops, tuned)
        steps = _steps(spec, n_flops, flops, batch)
        warmup = _warmup(spec, n_flops, batch, steps)
        cfg = _config(spec, base, model, seed, batch, steps, warmup, flops, spec.rules.schedule, peak_lr)
        runs.append(PlannedRun(run_id(cfg, data), cfg, flops, holdout, _account(cfg)))
    return runs


def _cooldown_family(
    spec: Spec,
    base: config_lib.Config,
    data: str,
    model: ModelConfig,
    seed: int,
    budgets: dict[float, bool],
    tuned: Tuned | None,
) -> list[PlannedRun]:
    """One trunk at the peak LR (never decayed) and a branch per budget that resumes the trunk's checkpoint where
    its own decay starts: each branch is the wsd run of its budget, bit for bit, at the cost of its decay alone.
    Every run of the family shares one batch and warm-up, sized for the smallest budget (so no branch is
    step-starved); the larger budgets take more, smaller steps than a cosine run of theirs would."""
    n_flops = flop_params(model, spec.seq_len)
    peak_lr = tuned.peak_lr(n_flops) if tuned else rule_lr(spec, n_flops)
    batch = _batch(spec, n_flops, min(budgets), tuned)
    steps = {flops: _steps(spec, n_flops, flops, batch) for flops in budgets}
    warmup = _warmup(spec, n_flops, batch, min(steps.values()))
    branches = []
    for flops, holdout in budgets.items():
        cfg = _config(spec, base, model, seed, batch, steps[flops], warmup, flops, "wsd", peak_lr)
        decay = optimizer_lib.decay_steps(cfg.train.optimizer, steps[flops])
        if decay >= steps[flops]:
            raise ConfigError(
                f"the d_model={model.d_model} run at {flops:.3g} FLOPs has {steps[flops]} step(s), too few to branch "
                "from a trunk; raise its budget or use rules.schedule=wsd"
            )
        # The branch saves a few times during its decay: a killed one resumes there, not at its trunk's step.
        train = dataclasses.replace(cfg.train, checkpoint_every=max(1, math.ceil(decay / spec.checkpoints_per_run)))
        branches.append((dataclasses.replace(cfg, train=train).validate(), flops, holdout, steps[flops] - decay))
    trunk = _trunk(spec, branches[0][0], sorted({step for *_, step in branches}))
    trunk_id = run_id(trunk, data)
    return [PlannedRun(trunk_id, trunk, max(budgets), False, _account(trunk), TRUNK)] + [
        PlannedRun(run_id(cfg, data), cfg, flops, holdout, _account(cfg), BRANCH, trunk_id, step)
        for cfg, flops, holdout, step in branches
    ]


def _trunk(spec: Spec, branch: config_lib.Config, branch_steps: list[int]) -> config_lib.Config:
    """A branch's config trained at the peak LR up to the last branch point, keeping a checkpoint at each."""
    steps, t = branch_steps[-1], branch.train
    every = max(1, steps // spec.eval.per_run)
    train = dataclasses.replace(
        t,
        steps=steps,
        log_every=every,
        eval_every=every,
        checkpoint_every=max(1, math.ceil(steps / spec.checkpoints_per_run)),
        checkpoint_steps=tuple(branch_steps),
        optimizer=dataclasses.replace(t.optimizer, schedule="constant"),
    )
    return dataclasses.replace(branch, train=train).validate()


def _batch(spec: Spec, n_flops: float, flops: float, tuned: Tuned | None = None) -> int:
    """Sequences per step: tokens per step = clip(D / target_steps, min_tokens, max_tokens), or the tuned B*(C), as
    the nearest power of two sequences, a multiple of `multiple_of`."""
    rules, T = spec.rules.batch, spec.seq_len
    if tuned and tuned.batch:
        step_tokens = float(tuned.batch(flops))
    else:
        step_tokens = min(max(flops / (6.0 * n_flops) / rules.target_steps, rules.min_tokens), rules.max_tokens)
    batch = 2 ** max(0, round(math.log2(step_tokens / T)))
    return max(rules.multiple_of, batch - batch % rules.multiple_of)


def rule_lr(spec: Spec, n_flops: float) -> float:
    """rules.lr: peak x (N / at_params) ^ exponent."""
    rule = spec.rules.lr
    return rule.peak * (n_flops / rule.at_params) ** rule.exponent


def _steps(spec: Spec, n_flops: float, flops: float, batch: int) -> int:
    return max(1, round(flops / (6.0 * n_flops) / (batch * spec.seq_len)))


def _warmup(spec: Spec, n_flops: float, batch: int, steps: int) -> int:
    rule = spec.rules.warmup
    warmup = round(rule.tokens_per_param * n_flops / (batch * spec.seq_len))
    return min(max(warmup, rule.min_steps), max(1, int(rule.max_fraction * steps)))


def _config(
    spec: Spec,
    base: config_lib.Config,
    model: ModelConfig,
    seed: int,
    batch: int,
    steps: int,
    warmup: int,
    flops: float,
    schedule: str,
    peak_lr: float,
) -> config_lib.Config:
    """An ordinary run of `steps` steps with the spec's rules; `flops` only names the run in errors."""
    rules, T = spec.rules, spec.seq_len
    if spec.eval.sequences % batch:
        raise ConfigError(
            f"eval.sequences={spec.eval.sequences} is not a multiple of the {batch}-sequence batch of the "
            f"d_model={model.d_model} run at {flops:.3g} FLOPs; use a multiple of {batch} so every run sees the same "
            "validation rows"
        )
    eval_every = max(1, steps // spec.eval.per_run)
    optimizer = OptimizerConfig(
        peak_lr=peak_lr,
        schedule=schedule,
        warmup_steps=warmup,
        min_lr_ratio=rules.min_lr_ratio,
        decay_fraction=rules.cooldown_fraction,
        decay_shape=rules.cooldown_shape,
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
    return dataclasses.replace(base, model=model, train=train).validate()


def _account(cfg: config_lib.Config) -> Accounting:
    t = cfg.train
    return account(cfg.model, cfg.seq_len, t.steps * t.batch_size * cfg.seq_len)
