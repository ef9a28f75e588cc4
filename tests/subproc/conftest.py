"""Subprocess tests run on three loops: stock asyncio and both uringloop child-exit paths.

uringloop sees a child exit through IORING_OP_WAITID on a pidfd (Linux 6.7+)
or, without it, through a poll on the pidfd followed by waitpid().  Both
paths are tested here: the uringloop side of every subprocess test is
parametrized into ``uringloop-waitid`` and ``uringloop-pidfd-poll`` (the
latter is ``Loop(disable={"waitid"})``, what ``URINGLOOP_DISABLE=waitid``
does).  The top-level conftest's tracking (exception-handler calls, ops in
flight, fd leaks) applies to all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import uringloop
import uringloop._unix

SUBPROC_LOOP_NAMES = ("asyncio", "uringloop-waitid", "uringloop-pidfd-poll")


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

    def waitid_loop() -> asyncio.AbstractEventLoop:
        loop = root.new_uringloop_loop()
        if not loop.features.waitid:
            loop.close()
            pytest.skip("the kernel has no IORING_OP_WAITID (Linux 6.7+): "
                        "only the pidfd-poll path can be tested here")
        return loop

    def pidfd_poll_loop() -> asyncio.AbstractEventLoop:
        if root._unavailable is not None:  # pragma: no cover - depends on host
            pytest.skip(f"io_uring unavailable: {root._unavailable}")
        loop = uringloop.Loop(disable={"waitid"})
        assert not loop.features.waitid
        return root._track(loop)

    return {
        "asyncio": root.new_asyncio_loop,
        "uringloop-waitid": waitid_loop,
        "uringloop-pidfd-poll": pidfd_poll_loop,
    }


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return _factories(config)


@pytest.fixture(params=SUBPROC_LOOP_NAMES)
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of one loop under test: stock, or uringloop on one child-exit path."""
    return _factories(request.config)[request.param]


@pytest.fixture(autouse=True)
def _child_exit_path_is_the_one_named(request: pytest.FixtureRequest,
                                      monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test id must not lie: every exit a uringloop-waitid test saw came
    from a successful IORING_OP_WAITID, every one a uringloop-pidfd-poll test
    saw from the pidfd poll.  (A WAITID the kernel rejects falls back to the
    poll silently -- which once hid a wrong opcode number.)"""
    callspec = getattr(request.node, "callspec", None)
    ids = callspec.id.split("-") if callspec is not None else []
    names = [n for n in ("uringloop-waitid", "uringloop-pidfd-poll")
             if all(part in ids for part in n.split("-"))]
    if not names:
        yield
        return
    name = names[0]
    watch = uringloop._unix._ChildWatch
    seen: list[str] = []
    on_waitid, on_poll = watch._on_waitid, watch._on_poll

    def spy_waitid(self: Any, res: int, flags: int) -> None:
        seen.append("waitid" if res >= 0 else f"waitid-failed({res})")
        on_waitid(self, res, flags)

    def spy_poll(self: Any, res: int, flags: int) -> None:
        seen.append("pidfd-poll")
        on_poll(self, res, flags)

    monkeypatch.setattr(watch, "_on_waitid", spy_waitid)
    monkeypatch.setattr(watch, "_on_poll", spy_poll)
    yield
    expected = "waitid" if name == "uringloop-waitid" else "pidfd-poll"
    wrong = [path for path in seen if path != expected]
    assert not wrong, f"{name}: child exits seen through {wrong}"
