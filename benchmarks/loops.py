"""The event loops under test, by name, as loop factories.

Each is imported only in the process that runs it, so a loop that cannot be
imported (uvloop not installed, io_uring refused) fails its own cells only.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

PYTHON_LOOPS = ("uringloop", "asyncio", "uvloop")
C_REFERENCE = "c"          # the C reference server: network cells only
ALL_LOOPS = PYTHON_LOOPS + (C_REFERENCE,)

LABELS = {"uringloop": "uringloop", "asyncio": "asyncio", "uvloop": "uvloop",
          C_REFERENCE: "C ref"}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The ``loop_factory`` for asyncio.Runner that makes a loop called name."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uringloop":
        import uringloop
        return uringloop.new_event_loop
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    raise ValueError(f"unknown loop {name!r}; expected one of {PYTHON_LOOPS}")


def not_installed(module: str) -> str | None:
    """"<module> not installed" if it cannot be imported here, else None (cheap check)."""
    return None if importlib.util.find_spec(module) is not None else f"{module} not installed"


def unavailable(loop: str) -> str | None:
    """Why loop cannot run in this interpreter, or None if it may."""
    return not_installed(loop) if loop in ("uringloop", "uvloop") else None
