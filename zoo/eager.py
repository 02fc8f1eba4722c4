"""Eager optimizers without ``torch._dynamo``: what a run that compiles nothing need not import.

Every ``torch.optim`` optimizer imports ``torch._dynamo`` (about 2 s and 150 MiB, more than
``import torch`` itself) the first time it is built, zeroed, stepped or saved, although an eager
run never compiles anything:

* ``Optimizer.add_param_group`` (which ``__init__`` calls), ``zero_grad``, ``state_dict`` and
  ``load_state_dict`` are wrapped by ``torch._disable_dynamo``, whose wrapper imports dynamo to
  build ``torch._dynamo.disable(fn)`` on its first call and caches it on ``fn`` as the attribute
  ``__dynamo_disable``;
* ``step`` (of SGD, Adam and the others) is wrapped by ``_use_grad_for_differentiable``, which
  imports dynamo on every call for two ``torch._dynamo.graph_break()`` calls.

Both wrappers only matter while dynamo traces, and nothing traces before ``torch._dynamo`` is
imported. So, while :func:`without_dynamo` is entered and dynamo has not been imported by
anyone, the first kind finds in its cache a callable that calls ``fn`` directly, and an
optimizer given to :func:`eager_step` steps through torch's own hooks and profiling wrapper and
the same grad mode as ``_use_grad_for_differentiable`` sets, less the graph breaks. The moment
anything imports ``torch._dynamo`` (``--compile``, torchvision, a plugin), both hand over to
torch's own wrappers, so compiled code sees exactly what torch gives it. The computations are
the same either way: a run gives bitwise the same weights with and without this module.

:func:`problems` says which of the torch internals this relies on no longer look as expected
(``tests/test_perf_dynamo.py`` fails loudly on a torch that changes them); where they do not
match, nothing is changed and torch imports dynamo as before.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FunctionType, MethodType
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as optimizer_module

__all__ = ["DYNAMO", "without_dynamo", "eager_step", "problems", "disabled_functions"]

DYNAMO = "torch._dynamo"
CACHE = "__dynamo_disable"  # where torch._disable_dynamo's wrapper caches torch._dynamo.disable(fn)


def _probe() -> None:  # pragma: no cover - never called, only wrapped
    return None


# The code objects of torch's two wrappers, whatever this torch's version: a method is wrapped by
# one of them exactly when its __code__ is one of these.
DISABLE_CODE = torch._disable_dynamo(_probe).__code__
USE_GRAD_CODE = optimizer_module._use_grad_for_differentiable(_probe).__code__


def _closure(function: FunctionType) -> dict[str, Any]:
    cells = function.__closure__ or ()
    return dict(zip(function.__code__.co_freevars, (cell.cell_contents for cell in cells)))


def disabled_functions(cls: type) -> list[tuple[FunctionType, bool]]:
    """``(fn, recursive)`` of each method of ``cls`` (and its bases) that ``torch._disable_dynamo``
    wraps: ``fn`` is the undecorated function, whose ``__dynamo_disable`` the wrapper reads."""
    found = []
    for klass in cls.__mro__:
        for attr in vars(klass).values():
            if isinstance(attr, FunctionType) and attr.__code__ is DISABLE_CODE:
                closure = _closure(attr)
                found.append((closure["fn"], bool(closure.get("recursive", True))))
    return found


def problems() -> list[str]:
    """What of the mechanism above this torch does not have (empty: all of it)."""
    found = []
    if CACHE not in DISABLE_CODE.co_consts:
        found.append(f"torch._disable_dynamo's wrapper no longer reads the {CACHE!r} cache attribute")
    if set(DISABLE_CODE.co_freevars) != {"fn", "recursive"}:
        found.append(f"torch._disable_dynamo's wrapper closes over {DISABLE_CODE.co_freevars}, not (fn, recursive)")
    wrapped = {fn.__name__ for fn, _ in disabled_functions(Optimizer)}
    if "add_param_group" not in wrapped:
        found.append("Optimizer.add_param_group is no longer wrapped by torch._disable_dynamo")
    if "func" not in USE_GRAD_CODE.co_freevars:
        found.append("_use_grad_for_differentiable's wrapper no longer closes over 'func'")
    if _use_grad(torch.optim.SGD) is None:
        found.append("SGD.step is no longer wrapped by _use_grad_for_differentiable")
    return found


class _Eager:
    """What ``fn.__dynamo_disable`` holds while dynamo is not imported: ``fn`` itself. Once
    dynamo is imported, it builds and caches what torch's wrapper would have cached."""

    def __init__(self, fn: FunctionType, recursive: bool):
        self.fn, self.recursive = fn, recursive

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if DYNAMO not in sys.modules:
            return self.fn(*args, **kwargs)
        import torch._dynamo

        disabled = torch._dynamo.disable(self.fn, self.recursive, wrapping=False)
        setattr(self.fn, CACHE, disabled)
        return disabled(*args, **kwargs)


_lock = threading.Lock()
_depth = 0
_installed: list[tuple[FunctionType, _Eager]] = []


def _optimizer_classes() -> Iterator[type]:
    pending, seen = [Optimizer], set()
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            pending.extend(cls.__subclasses__())


def _install() -> None:
    if DYNAMO in sys.modules or problems():
        return
    for cls in _optimizer_classes():
        for fn, recursive in disabled_functions(cls):
            if CACHE not in vars(fn):  # never called yet: torch would import dynamo on the first call
                shim = _Eager(fn, recursive)
                setattr(fn, CACHE, shim)
                _installed.append((fn, shim))


def _uninstall() -> None:
    for fn, shim in _installed:
        if vars(fn).get(CACHE) is shim:  # not replaced by torch's own since dynamo came in
            delattr(fn, CACHE)
    _installed.clear()


@contextmanager
def without_dynamo(enabled: bool = True) -> Iterator[None]:
    """While entered (and ``enabled``: not with ``--compile``), building, zeroing and saving
    ``torch.optim`` optimizers does not import ``torch._dynamo``. Leaves torch as it found it."""
    global _depth
    if not enabled:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _install()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _uninstall()


def _use_grad(cls: type) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``(torch's _use_grad wrapper, the undecorated step)`` of ``cls.step`` when it is
    ``[profile_hook_step(]_use_grad_for_differentiable(step)[)]``, else None."""
    step = getattr(cls, "step", None)
    # The first instance's __init__ wraps the class's step in profile_hook_step ("hooked").
    inner = getattr(step, "__wrapped__", None) if getattr(step, "hooked", False) else step
    if not isinstance(inner, FunctionType) or inner.__code__ is not USE_GRAD_CODE:
        return None
    func = _closure(inner).get("func")
    return (inner, func) if isinstance(func, FunctionType) else None


def eager_step(optimizer: Optimizer) -> bool:
    """Give ``optimizer`` (an instance) a ``step`` that does not import ``torch._dynamo`` while
    nothing has imported it: torch's ``profile_hook_step`` (hooks, profiler range) around the
    undecorated step under the grad mode ``_use_grad_for_differentiable`` sets. Once dynamo is
    imported, it calls torch's own. True when applied (False: not a step of that shape)."""
    found = _use_grad(type(optimizer))
    if found is None:
        return False
    use_grad, func = found

    def step(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if DYNAMO in sys.modules:
            return use_grad(self, *args, **kwargs)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return func(self, *args, **kwargs)

    optimizer.step = MethodType(Optimizer.profile_hook_step(step), optimizer)  # type: ignore[method-assign]
    return True
