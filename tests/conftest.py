"""Shared test machinery: every behaviour test runs on uringloop AND stock asyncio.

Two ways to write a behaviour test, both parametrized over the loops:

* ``@pytest.mark.asyncio async def test_x(): ...`` -- pytest-asyncio's
  ``pytest_asyncio_loop_factories`` hook (below) runs it once per loop; the
  ids are ``[asyncio]`` and ``[uringloop]``.
* ``def test_x(run): run(coro_fn())`` -- the ``run`` fixture runs a
  coroutine in ``asyncio.Runner(loop_factory=..., debug=True)`` for each loop.

Teardown, for both: any call of the loop's exception handler that the test
did not install a handler for fails the test; a uringloop loop must end with
no operation in flight and no provided buffer lent; the process must hold no
new fd.

Stock asyncio is the oracle: a divergence is marked per test with
``is_uringloop(loop)``, never by forking a test.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
from typing import Any, Callable, Coroutine

import pytest

import uringloop

LOOP_NAMES = ("asyncio", "uringloop")

_unavailable: str | None = None
try:
    uringloop.Loop().close()
except uringloop.UringUnavailableError as exc:  # pragma: no cover - depends on host
    _unavailable = str(exc)

# Loops created during the current test, with the exception-handler calls they saw.
_created: list[tuple[asyncio.AbstractEventLoop, list[dict[str, Any]]]] = []


def _track(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    seen: list[dict[str, Any]] = []

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)
        lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    _created.append((loop, seen))
    return loop


def new_asyncio_loop() -> asyncio.AbstractEventLoop:
    return _track(asyncio.SelectorEventLoop())


def new_uringloop_loop() -> asyncio.AbstractEventLoop:
    if _unavailable is not None:  # pragma: no cover - depends on host
        pytest.skip(f"io_uring unavailable: {_unavailable}")
    return _track(uringloop.new_event_loop())


FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": new_asyncio_loop,
    "uringloop": new_uringloop_loop,
}


def is_uringloop(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    loop = loop or asyncio.get_running_loop()
    return isinstance(loop, uringloop.Loop)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return FACTORIES


@pytest.fixture(params=LOOP_NAMES)
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of one loop under test (a test using it runs once per loop)."""
    return FACTORIES[request.param]


@pytest.fixture
def run(loop_factory: Callable[[], asyncio.AbstractEventLoop]
        ) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """run(coro) -> result, on a fresh loop of the kind under test, debug on."""
    def _run(coro: Coroutine[Any, Any, Any], *, debug: bool = True) -> Any:
        with asyncio.Runner(loop_factory=loop_factory, debug=debug) as runner:
            return runner.run(coro)
    return _run


def _open_fds() -> set[int]:
    # The listing's own directory fd appears in it and is closed by the time
    # listdir() returns: keep only fds still open.  (Counting it would hide a
    # leak: the lowest free number, which it had, is what a leaked fd gets.)
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            fcntl.fcntl(int(name), fcntl.F_GETFD)
        except OSError:
            continue
        fds.add(int(name))
    return fds


@pytest.fixture(autouse=True)
def _leak_and_handler_checks(request: pytest.FixtureRequest) -> Any:
    _created.clear()
    gc.collect()
    before = _open_fds()
    yield
    loops, _created[:] = list(_created), []
    problems = []
    for loop, seen in loops:
        if loop.get_exception_handler() is not None and seen and \
                not request.node.get_closest_marker("allow_exception_handler"):
            problems.append(f"exception handler called: {seen!r}")
        if isinstance(loop, uringloop.Loop):
            if not loop.is_closed():
                loop.close()
                problems.append("uringloop loop left open by the test")
            stats = loop.statistics()
            if stats.ops_in_flight:
                problems.append(f"{stats.ops_in_flight} io_uring operations still in flight")
            if stats.buffers_lent:
                problems.append(f"{stats.buffers_lent} provided buffers never handed back")
        elif not loop.is_closed():
            loop.close()
    del loops
    gc.collect()
    leaked = _open_fds() - before
    # An fd may be closed-and-reopened under the same number; only count new ones
    # that are still open and are not the pytest capture machinery's.
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    if leaked:
        targets = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked
                   if os.path.exists(f"/proc/self/fd/{fd}")}
        problems.append(f"file descriptors leaked: {targets}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_exception_handler: the test expects the loop's exception "
        "handler to be called")
