"""The two registries (kernels and layers), lookup by name or import path, discovery of this folder, and `check`,
the config checks that need them."""

import importlib
import pkgutil
from collections.abc import Callable
from typing import Protocol

import jax

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError


class KernelFn(Protocol):
    def __call__(self, q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array: ...


class BlockFn(Protocol):
    """A kernel that also returns the log-sum-exp of each query's logits (f32, [B, H, T]), so that results over
    different keys combine exactly (online softmax)."""

    def __call__(
        self, q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask
    ) -> tuple[jax.Array, jax.Array]: ...


class _Registry:
    """Names -> objects, plus the module each came from (so an import path finds what its module registered)."""

    def __init__(self, what: str, option: str):
        self.what, self.option = what, option
        self.entries: dict[str, object] = {}
        self.modules: dict[str, list[str]] = {}

    def add(self, name: str, obj, module: str) -> None:
        if name in self.entries:
            raise ValueError(f"attention {self.what} {name!r} is registered twice")
        self.entries[name] = obj
        self.modules.setdefault(module, []).append(name)

    def get(self, name: str):
        _discover()
        if name not in self.entries and "." in name:
            self._import_path(name)
        if name not in self.entries:
            raise ConfigError(
                f"unknown attention variant {name!r}; set {self.option} to one of: {', '.join(self.names())} "
                f"(or to the import path of a module that registers an attention {self.what})"
            )
        return self.entries[name]

    def _import_path(self, path: str) -> None:
        try:
            importlib.import_module(path)
        except ImportError as e:
            raise ConfigError(f"{self.option}={path!r}: cannot import it ({e}); check the module path") from None
        found = self.modules.get(path, [])
        if len(found) != 1:
            raise ConfigError(
                f"{self.option}={path!r}: the module registers {len(found)} attention {self.what}s, not one; "
                f"name one of them instead ({', '.join(found) or 'none'})"
            )
        self.entries[path] = self.entries[found[0]]

    def names(self) -> list[str]:
        _discover()
        return sorted(n for n in self.entries if "." not in n)


_KERNELS = _Registry("kernel", "model.attention")
_INEXACT: set[KernelFn] = set()  # kernels that compute something other than `reference`
_NO_BIAS: set[KernelFn] = set()  # kernels with no logits to add ALiBi's bias to
_BLOCKS: dict[KernelFn, BlockFn] = {}  # each kernel's form that also returns softmax statistics, where it has one
_PLATFORMS: dict[KernelFn, tuple[str, ...]] = {}  # where a kernel compiles natively (elsewhere: emulated, slowly)
_LAYERS = _Registry("layer", "model.attention_layer")
# `auto`: the fastest kernel that is exact on each platform (docs/attention.md has the measurements behind it).
AUTO = {"tpu": "splash", "gpu": "fused", "cpu": "blocked"}


def register_kernel(
    name: str,
    *,
    exact: bool = True,
    bias: bool = True,
    block: BlockFn | None = None,
    platforms: tuple[str, ...] | None = None,
) -> Callable[[KernelFn], KernelFn]:
    """exact=False: the kernel computes something other than softmax attention as `reference` defines it, so the
    shared suite does not compare the two. bias=False: it cannot take the mask's logit bias (ALiBi). block: the same
    attention returning each query's log-sum-exp too, which lets it serve as ring attention's inner block.
    platforms: the JAX backends it is written for (None: any), e.g. a Pallas kernel interpreted elsewhere."""

    def add(fn: KernelFn) -> KernelFn:
        _KERNELS.add(name, fn, fn.__module__)
        if not exact:
            _INEXACT.add(fn)
        if not bias:
            _NO_BIAS.add(fn)
        if block is not None:
            _BLOCKS[fn] = block
        if platforms is not None:
            _PLATFORMS[fn] = platforms
        return fn

    return add


def register_layer(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        _LAYERS.add(name, cls, cls.__module__)
        return cls

    return add


def kernel(name: str) -> KernelFn:
    if name == "auto":
        name = AUTO.get(jax.default_backend(), "reference")
    return _KERNELS.get(name)


def is_exact(name: str) -> bool:
    """Whether the kernel must equal `reference` (to float rounding)."""
    return kernel(name) not in _INEXACT


def takes_bias(name: str) -> bool:
    """Whether the kernel adds the mask's logit bias (ALiBi)."""
    return kernel(name) not in _NO_BIAS


def is_native(name: str, platform: str) -> bool:
    """Whether the kernel is written for this JAX backend (not emulated on it)."""
    return platform in _PLATFORMS.get(kernel(name), (platform,))


def block(kernel_fn: KernelFn) -> BlockFn | None:
    """The kernel's form with softmax statistics (ring attention's inner block), or None if it has none."""
    return _BLOCKS.get(kernel_fn)


def kernel_name(kernel_fn: KernelFn) -> str:
    """The name a kernel is registered under, for messages."""
    _discover()
    return next(name for name, fn in _KERNELS.entries.items() if fn is kernel_fn)


def layer(name: str) -> type:
    return _LAYERS.get(name)


def check(cfg: ModelConfig) -> ModelConfig:
    """Raise ConfigError unless the config's kernel and layer are registered and take its other options. Run it on a
    config that passed `validate()`: the layers' own checks assume positive sizes."""
    kernel(cfg.attention)
    layer_cls = layer(cfg.attention_layer)
    if cfg.position == "alibi" and not takes_bias(cfg.attention):
        raise ConfigError(
            f"model.attention={cfg.attention} has no logits to add ALiBi's bias to; "
            "choose another model.position or model.attention"
        )
    layer_cls.validate(cfg)
    return cfg


def kernel_names() -> list[str]:
    return _KERNELS.names()


def layer_names() -> list[str]:
    return _LAYERS.names()


_DISCOVERED = False


def _discover() -> None:
    """Import every module of this folder once (each registers its variants as it is imported)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module("meshlm.model.attention")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
