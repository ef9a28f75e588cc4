"""File I/O tests: uringloop only, with the built-in ``open`` as the oracle.

``uringloop.open()`` and friends need a ring, so the behaviour tests here run
on uringloop alone (the stock-loop behaviour, a clear RuntimeError, has tests
of its own in test_files_errors.py).  The top-level conftest's teardown checks
(no operation in flight, no fd leaked, no exception-handler call) apply to
every loop created here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import uringloop


def _root_conftest(config: pytest.Config) -> Any:
    # The top-level conftest owns the loop tracking (registered under its path;
    # every conftest module is called "conftest", so it cannot be imported).
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == path:
            return plugin
    raise RuntimeError(f"top-level conftest {path} not loaded")


@pytest.fixture
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """Overrides the top-level (asyncio, uringloop) parametrization: uringloop only."""
    root = _root_conftest(request.config)

    def factory() -> asyncio.AbstractEventLoop:
        return root._track(uringloop.new_event_loop())
    return factory


@pytest.fixture
def stock_run(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """run(coro) on a tracked stock asyncio loop."""
    root = _root_conftest(request.config)

    def _run(coro: Any) -> Any:
        with asyncio.Runner(loop_factory=root.new_asyncio_loop, debug=True) as runner:
            return runner.run(coro)
    return _run
