"""Where activations live on a device mesh is parallel/'s decision; the model only names logical axes here.

parallel/ installs a layout for the duration of a trace (`Partitioner.activate()`); without one, every function
here leaves its arguments as they are, so the model runs unchanged on one device and never imports parallel/."""

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax


class Layout:
    """What a mesh decides for the model; this base is one device, where nothing moves."""

    def place(self, x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
        return x

    def reorders(self, T: int) -> bool:
        """Whether sequences of length T are held in context parallelism's load-balanced order."""
        return False

    def to_context_order(self, x_BX: jax.Array) -> jax.Array:
        return x_BX

    def to_time_order(self, x_BX: jax.Array) -> jax.Array:
        return x_BX

    def attend(self, kernel: Callable, q_BHTK, k_BGSK, v_BGSK, mask) -> jax.Array:
        return kernel(q_BHTK, k_BGSK, v_BGSK, mask)


_ONE_DEVICE = Layout()
# Read while a function is traced, so a jitted step keeps the layout that was active when it was first traced.
_ACTIVE: contextvars.ContextVar[Layout] = contextvars.ContextVar("meshlm_layout", default=_ONE_DEVICE)


@contextlib.contextmanager
def layout_active(layout: Layout) -> Iterator[None]:
    token = _ACTIVE.set(layout)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """x placed as the active layout puts these logical axes; unchanged when none is active."""
    return _ACTIVE.get().place(x, names)


def reorders(T: int) -> bool:
    return _ACTIVE.get().reorders(T)


def to_context_order(x_BX: jax.Array) -> jax.Array:
    """[B, T, ...] from time order into the order the context-parallel devices hold (axis 1)."""
    return _ACTIVE.get().to_context_order(x_BX)


def to_time_order(x_BX: jax.Array) -> jax.Array:
    """The inverse of to_context_order."""
    return _ACTIVE.get().to_time_order(x_BX)


def attend(kernel: Callable, q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask) -> jax.Array:
    """kernel(q, k, v, mask), or, on a sequence held in context order, the same attention computed across the devices
    that hold it (ring or all-gather, parallel/context.py)."""
    return _ACTIVE.get().attend(kernel, q_BHTK, k_BGSK, v_BGSK, mask)
