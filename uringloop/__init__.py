"""uringloop: a drop-in asyncio event loop for Linux, built on io_uring.

Adopt it in one line::

    uringloop.run(main())
    asyncio.run(main(), loop_factory=uringloop.new_event_loop)      # 3.12+
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as r: ...
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import warnings
from typing import Any, Callable, Coroutine, TypeVar

from ._files import mkdir, open, rename, stat, unlink
from ._loop import Loop, LoopStatistics
from ._ring import Features, UringUnavailableError

__all__ = [
    "EventLoopPolicy",
    "Features",
    "Loop",
    "LoopStatistics",
    "UringUnavailableError",
    "install",
    "new_event_loop",
    "run",
]
# uringloop.open, .stat, .rename, .unlink and .mkdir are public but not in
# __all__: ``from uringloop import *`` must not shadow the built-in open() or
# os-style names in the importing module.

__version__ = "0.1.0"

_T = TypeVar("_T")

_fallback_warned = False
_fallback_lock = threading.Lock()


def _fallback_requested(fallback: bool | None) -> bool:
    if fallback is not None:
        return fallback
    return os.environ.get("URINGLOOP_FALLBACK", "") not in ("", "0")


def new_event_loop(*, fallback: bool | None = None) -> asyncio.AbstractEventLoop:
    """Return a new :class:`Loop`.

    Raises :class:`UringUnavailableError` when io_uring cannot be used here.
    With ``fallback=True`` (or ``URINGLOOP_FALLBACK=1`` in the environment)
    a stock asyncio loop is returned instead, with a RuntimeWarning the first
    time; it is never chosen silently.
    """
    try:
        return Loop()
    except UringUnavailableError as exc:
        if not _fallback_requested(fallback):
            raise
        global _fallback_warned
        with _fallback_lock:
            first, _fallback_warned = not _fallback_warned, True
        if first:
            warnings.warn(f"uringloop: falling back to the stock asyncio loop: {exc}",
                          RuntimeWarning, stacklevel=2)
        return asyncio.SelectorEventLoop()


def run(main: Coroutine[Any, Any, _T], *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        debug: bool | None = None) -> _T:
    """Run a coroutine on a new uringloop loop, like :func:`asyncio.run`."""
    # Checked before the Runner exists, in asyncio.run's order: Runner.__enter__
    # creates the loop, and its close() inside a running loop would fail again.
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("uringloop.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    with asyncio.Runner(loop_factory=loop_factory or new_event_loop, debug=debug) as runner:
        return runner.run(main)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Event loop policy whose loops are uringloop loops.

    Policies are deprecated upstream (Python 3.14); prefer :func:`run` or
    ``loop_factory=uringloop.new_event_loop``.
    """

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


def install() -> None:
    """Install :class:`EventLoopPolicy` as the process's event loop policy.

    Deprecated from Python 3.12 on, as ``uvloop.install()``: use :func:`run`.
    """
    if sys.version_info >= (3, 12):
        warnings.warn("uringloop.install() is deprecated in favor of uringloop.run() "
                      "starting with Python 3.12.", DeprecationWarning, stacklevel=2)
    asyncio.set_event_loop_policy(EventLoopPolicy())
