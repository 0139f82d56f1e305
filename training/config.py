"""The whole run's configuration as one typed dataclass tree (model, train, data, mesh), each preset's training
defaults, `--set a.b=c` overrides and JSON round trips. The sections live beside their code; this file joins them."""

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from etils import epath

from meshlm.model import presets
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.training import recipe
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
        self.model.validate()
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
                f"set --set model.vocab_size={-(-self.data.vocab_size // 128) * 128}"
            )
        recipe.check(t)
        for name in (
            "batch_size",
            "micro_batches",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(t, name)} must be positive")
        return self


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
PRESET_TRAIN = {"tiny": _CPU_TRAIN, "tiny-modern": _CPU_TRAIN}


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
    return dataclasses.asdict(cfg)


def from_dict(data: dict, cls: type = Config) -> Any:
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(value, hint)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in saved {cls.__name__}; was it written by a newer meshlm?")
    return cls(**kwargs)


def save(cfg: Config, path: epath.PathLike) -> None:
    """Written to a temporary name, then renamed: a reader never sees half a config."""
    path = epath.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    tmp.replace(path)


def load(path: epath.PathLike) -> Config:
    return from_dict(json.loads(epath.Path(path).read_text()))
