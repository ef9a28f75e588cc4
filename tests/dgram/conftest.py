"""Datagram tests run on three loops: stock asyncio and both uringloop UDP paths.

With multishot receive and buffer rings, uringloop's UDP endpoints use the
ring-native transport (``uringloop/_datagram.py``, one multishot recvmsg);
without them, CPython's ``_SelectorDatagramTransport`` over ring polls.  The
uringloop side of every test here runs as ``uringloop`` (whatever the kernel
gives, normally the ring-native path) and ``uringloop-nomultishot``
(``Loop(disable={"recv_multishot"})``: the fallback).  The top-level
conftest's tracking (exception-handler calls, ops in flight, fd leaks)
applies to all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import uringloop

DGRAM_LOOP_NAMES = ("asyncio", "uringloop", "uringloop-nomultishot")


def _root_conftest(config: pytest.Config) -> Any:
    # The top-level conftest owns the loop tracking; it is registered as a
    # plugin under its path.  (It cannot be imported by name: every conftest
    # module is called "conftest".)
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == path:
            return plugin
    raise RuntimeError(f"top-level conftest {path} not loaded")


def _factories(config: pytest.Config) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    root = _root_conftest(config)

    def fallback_loop() -> asyncio.AbstractEventLoop:
        if root._unavailable is not None:  # pragma: no cover - depends on host
            pytest.skip(f"io_uring unavailable: {root._unavailable}")
        loop = uringloop.Loop(disable={"recv_multishot"})
        assert not loop.features.recv_multishot
        return root._track(loop)

    return {
        "asyncio": root.new_asyncio_loop,
        "uringloop": root.new_uringloop_loop,
        "uringloop-nomultishot": fallback_loop,
    }


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return _factories(config)


@pytest.fixture(params=DGRAM_LOOP_NAMES)
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of one loop under test: stock, or uringloop on one UDP path."""
    return _factories(request.config)[request.param]
