"""The sweep spec: a YAML file parsed into typed dataclasses; unknown keys and wrong types fail in one line.

The defaults are the small-sweep hygiene of docs/scaling.md: batch sized for >= ~800 steps per run, warm-up of
about N tokens capped at 10% of the run, peak LR falling with size, cosine over exactly the run's own tokens,
AdamW beta2 0.99.
"""

import dataclasses
import pathlib
import types
import typing

import yaml

from meshlm.model.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int = 0  # 0 = d_model // spec.head_dim


@dataclasses.dataclass(frozen=True)
class AutoShapes:
    """`count` sizes log-spaced over a factor `spread` in FLOP-equivalent params, centred on the size that a
    tokens-per-parameter prior calls optimal: N* = sqrt(C / (6 tokens_per_param))."""

    count: int = 4
    tokens_per_param: float = 20.0
    spread: float = 8.0
    aspect: float = 32.0  # d_model / n_layers
    width_multiple: int = 16  # d_model is a multiple of this (and of head_dim)


@dataclasses.dataclass(frozen=True)
class Budget:
    flops: float
    shapes: tuple[Shape, ...] = ()  # () = the spec's shapes
    auto: AutoShapes | None = None  # None = the spec's auto rule (when it lists no shapes)
    seeds: tuple[int, ...] = ()  # () = the spec's seeds


@dataclasses.dataclass(frozen=True)
class BatchRule:
    """tokens per step = clip(D / target_steps, min_tokens, max_tokens), as a power-of-two number of sequences."""

    target_steps: int = 800
    min_tokens: int = 512
    max_tokens: int = 4096
    multiple_of: int = 1  # sequences: the data-parallel width of the mesh


@dataclasses.dataclass(frozen=True)
class WarmupRule:
    """warm-up steps = N_flops x tokens_per_param tokens, at least min_steps, at most max_fraction of the run."""

    tokens_per_param: float = 1.0
    min_steps: int = 10
    max_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class LRRule:
    """peak LR = peak x (N_flops / at_params) ** exponent (Porian et al. 2024 find about -1/3)."""

    peak: float = 3e-3
    at_params: float = 1e5
    exponent: float = -0.33


@dataclasses.dataclass(frozen=True)
class Rules:
    batch: BatchRule = dataclasses.field(default_factory=BatchRule)
    warmup: WarmupRule = dataclasses.field(default_factory=WarmupRule)
    lr: LRRule = dataclasses.field(default_factory=LRRule)
    # Its length is always the run's own token budget. cooldown: one constant-LR trunk per (shape, seed), each budget
    # a branch from it that decays (docs/scaling.md, Cooldown branches).
    schedule: typing.Literal["cosine", "wsd", "cooldown"] = "cosine"
    cooldown_fraction: float = 0.2  # wsd and cooldown: the last fraction of each run decays
    cooldown_shape: typing.Literal["linear", "1-sqrt"] = "linear"
    min_lr_ratio: float = 0.1
    betas: tuple[float, ...] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0


DEFAULT_TUNE_TOKENS_PER_PARAM = 20.0  # about compute-optimal, where Porian et al. (2024) tuned
DEFAULT_LR_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclasses.dataclass(frozen=True)
class TuneRule:
    """The tune stage (docs/scaling.md, Per-size tuning): per shape, one short run at each peak LR of a grid (and each
    batch of batch_grid) before the main runs; their final losses give each size's LR* (a parabola in log LR), and a
    power law through them LR*(N) (and B*(C)), which the main runs use instead of rules.lr (and rules.batch)."""

    tokens_per_param: float | None = None  # each tune run trains this many tokens per parameter (default 20) ...
    flops: float | None = None  # ... or this many FLOPs, the same for every shape
    lr_grid: tuple[float, ...] | None = None  # multipliers of rules.lr at each shape's N (default 1/4 ... 4) ...
    lrs: tuple[float, ...] | None = None  # ... or absolute peak LRs, the same for every shape
    batch_grid: tuple[float, ...] = ()  # multipliers of the rules.batch batch; () = the batch is not tuned
    shapes: tuple[Shape, ...] = ()  # () = every shape of the fitted budgets
    seeds: tuple[int, ...] = (0,)

    def validate(self) -> None:
        if self.tokens_per_param is not None and self.flops is not None:
            raise ConfigError("tune gives both tokens_per_param and flops; keep one (the budget of each tune run)")
        if any(v is not None and v <= 0 for v in (self.tokens_per_param, self.flops)):
            raise ConfigError("tune.tokens_per_param and tune.flops must be positive, e.g. tokens_per_param: 20")
        if self.lr_grid is not None and self.lrs is not None:
            raise ConfigError("tune gives both lr_grid (multipliers of rules.lr) and lrs (absolute LRs); keep one")
        for name in ("lr_grid", "lrs", "batch_grid"):
            values = getattr(self, name)
            if values is None or (name == "batch_grid" and not values):
                continue
            if any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise ConfigError(f"tune.{name}={list(values)} must be distinct positive numbers")
            if len(values) < 3:
                raise ConfigError(f"tune.{name} has {len(values)} value(s); a parabola needs 3, e.g. [0.5, 1, 2]")
        if self.batch_grid and self.flops is not None:
            raise ConfigError(
                "tune.batch_grid with tune.flops: every tune run then has the same compute, so B*(C) cannot be "
                "fitted; give tune.tokens_per_param instead"
            )
        if not self.seeds:
            raise ConfigError("tune.seeds is empty; give at least one, e.g. seeds: [0]")

    def budget(self, n_flops: float) -> float:
        """The FLOPs of a tune run of a model with n_flops FLOP-equivalent parameters."""
        if self.flops is not None:
            return self.flops
        return 6.0 * (self.tokens_per_param or DEFAULT_TUNE_TOKENS_PER_PARAM) * n_flops * n_flops

    def peak_lrs(self, rule_lr: float) -> tuple[float, ...]:
        """The grid at a shape whose rules.lr LR is rule_lr."""
        if self.lrs is not None:
            return self.lrs
        return tuple(m * rule_lr for m in self.lr_grid or DEFAULT_LR_GRID)


@dataclasses.dataclass(frozen=True)
class EvalRule:
    sequences: int = 128  # the fixed validation set: the first `sequences` rows, the same for every run
    per_run: int = 5  # validation points per run (the last at the final step)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Dry-run time model: FLOP/s by width ([[max d_model, FLOP/s], ...]) plus a fixed cost per run."""

    # 2 CPU cores at the small batches of a CPU sweep (docs/scaling.md, Timings); a GPU spec gives its own.
    flops_per_s: tuple[tuple[float, ...], ...] = ((64, 2e10), (128, 4e10), (1e9, 8e10))
    overhead_s: float = 15.0  # compile, tokenizer copy, sampling at the end


@dataclasses.dataclass(frozen=True)
class LauncherDefaults:
    kind: typing.Literal["local", "ray"] = "local"
    address: str = ""  # ray: "" starts a local instance, "auto" joins the running cluster
    cpus_per_run: float = 1.0  # per host when hosts_per_run > 1
    gpus_per_run: float = 0.0
    hosts_per_run: int = 1  # > 1: one process per host of one slice, joined by jax.distributed
    slice_head: str = ""  # the resource only a slice's first host holds, e.g. TPU-v4-16-head
    tpus_per_host: float = 0.0  # Ray's `TPU` resource (chips) each host's process reserves
    cpu_devices: int = 0  # simulated CPU devices per process (tests); 0 = none


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    budgets: tuple[Budget, ...]
    preset: str = "tiny"
    overrides: tuple[str, ...] = ()  # --set style, applied to every run before the sweep's own fields
    data: dict = dataclasses.field(default_factory=dict)  # DataConfig fields
    seq_len: int = 128
    head_dim: int = 16
    shapes: tuple[Shape, ...] = ()
    auto: AutoShapes | None = None
    seeds: tuple[int, ...] = (0,)
    holdout: tuple[Budget, ...] = ()
    rules: Rules = dataclasses.field(default_factory=Rules)
    tune: TuneRule | None = None  # None: every run's peak LR (and batch) from the rules
    eval: EvalRule = dataclasses.field(default_factory=EvalRule)
    checkpoints_per_run: int = 4
    max_epochs: float = 1.0  # no run may see more than this many passes over the training split
    mesh: str = ""
    launcher: LauncherDefaults = dataclasses.field(default_factory=LauncherDefaults)
    estimate: Estimate = dataclasses.field(default_factory=Estimate)
    retries: int = 3  # a killed, preempted or crashed run is tried again this many times, from its checkpoint
    retry_backoff_s: float = 30.0  # the wait before the first retry, doubling for each one after it
    retry_backoff_max_s: float = 600.0

    def validate(self) -> "Spec":
        if not self.budgets:
            raise ConfigError(f"sweep {self.name!r} lists no budgets; add e.g. budgets: [1.0e+11, 3.0e+11]")
        for b in self.budgets + self.holdout:
            if b.flops <= 0:
                raise ConfigError(f"budget {b.flops} must be positive FLOPs")
            if not (b.shapes or b.auto or self.shapes or self.auto):
                raise ConfigError(f"budget {b.flops:.3g} has no shapes; list `shapes:` or give `auto:` in the spec")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one, e.g. seeds: [0]")
        if len(self.rules.betas) != 2:
            raise ConfigError(f"rules.betas={list(self.rules.betas)} must be two numbers, e.g. [0.9, 0.99]")
        if not 0 < self.rules.cooldown_fraction < 1:
            raise ConfigError(f"rules.cooldown_fraction={self.rules.cooldown_fraction} must be in (0, 1), e.g. 0.2")
        if self.max_epochs <= 0 or self.checkpoints_per_run <= 0 or self.eval.per_run <= 0:
            raise ConfigError("max_epochs, checkpoints_per_run and eval.per_run must be positive")
        if self.retries < 0 or not 0 <= self.retry_backoff_s <= self.retry_backoff_max_s:
            raise ConfigError(
                f"retries={self.retries}, retry_backoff_s={self.retry_backoff_s}, retry_backoff_max_s="
                f"{self.retry_backoff_max_s}: need retries >= 0 and 0 <= retry_backoff_s <= retry_backoff_max_s"
            )
        if self.tune is not None:
            self.tune.validate()
        return self


def load(path: str | pathlib.Path, overrides: typing.Sequence[str] = ()) -> Spec:
    """The spec in `path`, with `overrides` (`key.path=VALUE`, VALUE read as YAML) set over its fields."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} does not exist; pass a YAML file such as experiments/sweeps/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    for item in overrides:
        raw = override(raw, item)
    return parse(raw, where=str(path))


def override(raw: typing.Any, item: str) -> typing.Any:
    """raw with one field set: `rules.schedule=cosine`, `tune=null`, `seeds=[0, 1]` (the value is YAML)."""
    key, sep, text = item.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise ConfigError(f"--set {item!r} is not of the form key.path=value, e.g. --set rules.schedule=cosine")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--set {item!r}: the spec is not a YAML mapping")
    raw = dict(raw)
    node = raw
    for depth, name in enumerate(keys[:-1]):
        child = node.get(name, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is {child!r} in the spec, not a section with fields")
        node[name] = dict(child)
        node = node[name]
    node[keys[-1]] = value
    return raw


def parse(raw: typing.Any, where: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a sweep spec is a YAML mapping with at least `name` and `budgets`")
    return _build(Spec, raw, where).validate()


def _build(cls: type, raw: typing.Any, where: str) -> typing.Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in {cls.__name__}; known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [
        n
        for n, f in fields.items()
        if n not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: {cls.__name__} needs {missing[0]!r}")
    return cls(**{name: _convert(value, hints[name], f"{where}.{name}") for name, value in raw.items()})


def _convert(value: typing.Any, hint: typing.Any, where: str) -> typing.Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), where)
    if hint is Budget and not isinstance(value, dict):
        return Budget(flops=_convert(value, float, where))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r}: expected one of {', '.join(map(str, args))}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if hint in (int, float):
        # YAML 1.1 reads 1e11 (no dot) as a string: accept it as the number it means.
        try:
            number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or (hint is int and number != int(number)):
            raise ConfigError(f"{where}={value!r}: expected {'an integer' if hint is int else 'a number'}")
        return hint(number)
    if hint is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return str(value)
    raise TypeError(f"no YAML conversion for {hint}")
