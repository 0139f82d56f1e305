"""Where activations live on a device mesh is parallel/'s decision; the model only names logical axes here.

parallel/ installs a layout function for the duration of a trace (`Partitioner.activate()`); without one,
`constrain` is the identity, so the model runs unchanged on one device and never imports parallel/."""

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax

Layout = Callable[[jax.Array, tuple[str | None, ...]], jax.Array]

# Read while a function is traced, so a jitted step keeps the layout that was active when it was first traced.
_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("meshlm_layout", default=None)


@contextlib.contextmanager
def layout_active(layout: Layout) -> Iterator[None]:
    token = _ACTIVE.set(layout)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """x placed as the active layout puts these logical axes; unchanged when none is active."""
    layout = _ACTIVE.get()
    return x if layout is None else layout(x, names)
