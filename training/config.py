"""The whole run's configuration as one typed dataclass tree (model, train, data, mesh), each preset's training
defaults, `--set a.b=c` overrides and JSON round trips. The sections live beside their code; this file joins them."""

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from etils import epath

from meshlm.model import attention, presets
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.training import profile, recipe
from meshlm.training.atomic import write_atomic
from meshlm.training.data_config import DataConfig
from meshlm.training.train_config import OptimizerConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    preset: str = ""

    @property
    def seq_len(self) -> int:
        return self.train.seq_len or self.model.n_ctx

    def validate(self) -> "Config":
        attention.check(self.model.validate())
        t = self.train
        if self.seq_len > self.model.n_ctx:
            raise ConfigError(
                f"train.seq_len={self.seq_len} exceeds model.n_ctx={self.model.n_ctx}; lower train.seq_len or raise "
                "model.n_ctx"
            )
        if t.batch_size % t.micro_batches:
            raise ConfigError(
                f"train.micro_batches={t.micro_batches} does not divide train.batch_size={t.batch_size}; pick a divisor"
            )
        if self.data.vocab_size > self.model.vocab_size:
            raise ConfigError(
                f"data.vocab_size={self.data.vocab_size} exceeds model.vocab_size={self.model.vocab_size}; "
                f"set --set data.vocab_size={self.model.vocab_size} or --set "
                f"model.vocab_size={-(-self.data.vocab_size // 128) * 128}"
            )
        recipe.check(t)
        for name in (
            "batch_size",
            "micro_batches",
            "steps_per_call",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(t, name)} must be positive")
        if t.seq_len < 0:
            raise ConfigError(f"train.seq_len={t.seq_len} must be positive, or 0 for model.n_ctx")
        if any(s <= 0 for s in t.checkpoint_steps):
            raise ConfigError(f"train.checkpoint_steps={','.join(map(str, t.checkpoint_steps))} must be positive steps")
        profile.parse_window(t.profile)
        _validate_optimizer(t.optimizer)
        _validate_data(self.data)
        return self


def _validate_optimizer(o: OptimizerConfig) -> None:
    checks = (
        ("peak_lr", o.peak_lr > 0, "a positive learning rate, e.g. 3e-4"),
        ("warmup_steps", o.warmup_steps >= 0, "0 or more steps"),
        ("min_lr_ratio", 0 <= o.min_lr_ratio <= 1, "a fraction of the peak in [0, 1]"),
        ("decay_fraction", 0 < o.decay_fraction <= 1, "a fraction of the run in (0, 1]"),
        ("b1", 0 <= o.b1 < 1, "a value in [0, 1), e.g. 0.9"),
        ("b2", 0 <= o.b2 < 1, "a value in [0, 1), e.g. 0.95"),
        ("eps", o.eps > 0, "a small positive number, e.g. 1e-8"),
        ("weight_decay", o.weight_decay >= 0, "0 (off) or more"),
        ("grad_clip", o.grad_clip >= 0, "0 (off) or a positive norm"),
        ("z_loss", o.z_loss >= 0, "0 (off) or a positive weight"),
    )
    for name, ok, want in checks:
        if not ok:  # also false for NaN
            raise ConfigError(f"train.optimizer.{name}={getattr(o, name)!r} is out of range; set it to {want}")


def _validate_data(d: DataConfig) -> None:
    for name in ("shuffle_window", "tokenizer_train_chars"):
        if getattr(d, name) <= 0:
            raise ConfigError(f"data.{name}={getattr(d, name)} must be positive")


# Training defaults that make the small presets finish in minutes on 2 CPU cores (`make demo`).
_CPU_TRAIN = TrainConfig(
    steps=300,
    batch_size=16,
    seq_len=128,
    log_every=25,
    eval_every=50,
    eval_batches=8,
    checkpoint_every=100,
    optimizer=OptimizerConfig(peak_lr=3e-3, warmup_steps=30),
)
# cpu-small is the CPU benchmark model: several steps per XLA call made its steps 6-8 % faster (docs/performance.md);
# 5 divides its log, evaluation and checkpoint intervals, so every call is 5 steps long.
PRESET_TRAIN = {"tiny": _CPU_TRAIN, "tiny-modern": _CPU_TRAIN, "cpu-small": TrainConfig(steps_per_call=5)}


def from_preset(name: str, overrides: list[str] = ()) -> Config:
    model = presets.get(name)
    data = DataConfig(vocab_size=min(DataConfig().vocab_size, model.vocab_size))
    train = recipe.train_config(name) or PRESET_TRAIN.get(name, TrainConfig())
    cfg = Config(model=model, train=train, data=data, preset=name)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key.path=value, e.g. --set model.d_model=512")
        path, value = item.split("=", 1)
        cfg = _replace_path(cfg, path.strip().split("."), value.strip(), path)
    return cfg


def _replace_path(node: Any, keys: list[str], value: str, full: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(node)}
    if keys[0] not in fields:
        raise ConfigError(f"unknown config key {full!r}: {type(node).__name__} has {', '.join(fields)}")
    hint = typing.get_type_hints(type(node))[keys[0]]
    if len(keys) > 1:
        child = getattr(node, keys[0])
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"unknown config key {full!r}: {keys[0]} is a value, not a section")
        return dataclasses.replace(node, **{keys[0]: _replace_path(child, keys[1:], value, full)})
    if dataclasses.is_dataclass(hint):
        raise ConfigError(
            f"config key {full!r} is a section; set one of its fields, e.g. "
            f"{full}.{dataclasses.fields(hint)[0].name}=..."
        )
    return dataclasses.replace(node, **{keys[0]: _parse(value, hint, full)})


def _parse(text: str, hint: Any, full: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin is Literal:
            if text not in hint.__args__:
                raise ValueError
            return text
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if origin is tuple:
            return tuple(_parse(x, hint.__args__[0], full) for x in text.split(",") if x)
        if origin in (typing.Union, types.UnionType):
            return _parse(text, next(a for a in hint.__args__ if a is not type(None)), full)
        return hint(text)
    except (ValueError, TypeError, StopIteration):
        expected = " | ".join(hint.__args__) if origin is Literal else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"--set {full}={text!r}: expected {expected}") from None


def to_dict(cfg: Config) -> dict:
    """The config as its JSON holds it (tuples as lists), so it equals what config.json and a tracker read back."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict, cls: type = Config, where: str = "") -> Any:
    """The dataclass `cls` from JSON data, every value checked against its field's type (no code is run)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or 'root'!r} is a {type(data).__name__}, not an object of fields")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint, full = data[f.name], hints[f.name], f"{where}{f.name}"
        if dataclasses.is_dataclass(hint):
            value = from_dict(value, hint, f"{full}.")
        else:
            value = _typed(value, hint, full)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in saved {cls.__name__}; was it written by a newer meshlm?")
    return cls(**kwargs)


def _typed(value: Any, hint: Any, full: str) -> Any:
    """A JSON value as the field's type, or a ConfigError naming the field (JSON ints stand for floats)."""
    origin = typing.get_origin(hint)
    ok = True
    if origin is Literal:
        ok = value in hint.__args__
    elif origin is tuple:  # a list in JSON, a tuple in to_dict's own output (a sweep job handed to Ray)
        ok = isinstance(value, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in value)
        value = tuple(value) if ok else value
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint in (int, str, bool):
        ok = isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    if not ok:
        expected = " | ".join(map(repr, hint.__args__)) if origin is Literal else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"config field {full}={value!r} should be {expected}; fix it in the config file")
    return value


def save(cfg: Config, path: epath.PathLike) -> None:
    """Written to a temporary name, then renamed: a reader never sees half a config."""
    write_atomic(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def load(path: epath.PathLike) -> Config:
    """A config saved by `save` (JSON, parsed as data); damaged or mistyped files are a one-line ConfigError."""
    path = epath.Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 JSON text; restore it from a copy or start a new --run-dir") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix it, restore it from a copy or start a new "
            "--run-dir"
        ) from None
    return from_dict(data)
