"""Run one ``test.test_asyncio`` module on one loop and write per-test outcomes.

This script runs in a subprocess of its own (see ``harness.py``): CPython's
asyncio suites mutate process-global state (the event loop policy, signal
handlers, child watchers), so every (module, loop) pair gets a fresh
interpreter.  It is deliberately standalone -- stdlib plus uringloop only --
so it can be run by hand::

    python tests/conformance/runner.py --loop uringloop test_tasks

The loop under test is installed by replacing the loop factory of the
default policy class.  A module's ``tearDownModule`` (and many setUp/tearDown
methods) call ``asyncio.set_event_loop_policy(None)``; the next default
policy is a fresh instance of the same class, so the patch survives that.
Both loops are installed the same way (a counting factory), so the stock run
differs from the uringloop run only in the class of loop created.

Output, one JSON object per line, appended to ``--out`` and flushed as it
happens so the harness still knows where a crashed or hung run stopped::

    {"event": "meta", ...}           python version, loop, number of tests
    {"event": "start", "id": ...}
    {"event": "result", "id": ..., "outcome": ..., "loops": n, ...}
    {"event": "done", ...}

``outcome`` is one of pass, fail, error, skip, xfail (expected failure) and
xpass (unexpected success).  ``loops`` counts the real event loops of the
kind under test the test created: 0 means it only used a fake loop
(``test_utils.TestLoop``) or no loop at all and so did not exercise ours.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import importlib
import json
import os
import sys
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from typing import Any, TextIO

PACKAGE = "test.test_asyncio"


@dataclasses.dataclass(frozen=True)
class Mirror:
    """A loop-parametrized test class of a module, re-created for the loop under test.

    CPython instantiates its loop-parametrized mixins once per stock loop kind
    (EPollEventLoopTests, SelectorStartServerTests, ...), each overriding one
    method to create its loop.  ``name`` subclasses ``source`` (the class
    CPython runs on Linux: the epoll selector loop) with ``method`` returning
    the loop under test.  In the stock run that is a plain SelectorEventLoop,
    so the class is ``source`` under another name and both runs report the
    same test ids.  ``source`` and ``drop`` -- siblings that construct a stock
    loop explicitly, so never exercise ours -- are left out of both runs.
    """

    source: str
    method: str
    name: str
    drop: frozenset[str] = frozenset()


_SELECTOR_SIBLINGS = frozenset({"KqueueEventLoopTests", "PollEventLoopTests",
                                "SelectEventLoopTests", "ProactorEventLoopTests"})

MIRRORS: dict[str, Mirror] = {
    "test_events": Mirror("EPollEventLoopTests", "create_event_loop",
                          "ConformanceEventLoopTests", _SELECTOR_SIBLINGS),
    # The network suites; the others among them get
    # their loops from the default policy.
    "test_sock_lowlevel": Mirror("EPollEventLoopTests", "create_event_loop",
                                 "ConformanceSockTests", _SELECTOR_SIBLINGS),
    "test_sendfile": Mirror("EPollEventLoopTests", "create_event_loop",
                            "ConformanceSendfileTests", _SELECTOR_SIBLINGS),
    "test_server": Mirror("SelectorStartServerTests", "new_loop",
                          "ConformanceStartServerTests",
                          frozenset({"ProactorStartServerTests"})),
    "test_buffered_proto": Mirror("BufferedProtocolSelectorTests", "new_loop",
                                  "ConformanceBufferedProtocolTests",
                                  frozenset({"BufferedProtocolProactorTests"})),
    "test_sslproto": Mirror("SelectorStartTLSTests", "new_loop",
                            "ConformanceStartTLSTests",
                            frozenset({"ProactorStartTLSTests"})),
}

_loops_created = 0


def _counting(factory: Callable[[], asyncio.AbstractEventLoop]
              ) -> Callable[[], asyncio.AbstractEventLoop]:
    def new_loop() -> asyncio.AbstractEventLoop:
        global _loops_created
        loop = factory()
        _loops_created += 1
        return loop
    return new_loop


def loop_class(kind: str) -> type[asyncio.AbstractEventLoop]:
    """The class of loop the default policy creates in a run on ``kind``."""
    if kind == "uringloop":
        import uringloop
        return uringloop.Loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    raise ValueError(f"unknown loop {kind!r}")


def default_policy_class() -> type:
    """The class of ``asyncio.get_event_loop_policy()``'s default policy."""
    for name in ("_UnixDefaultEventLoopPolicy", "_DefaultEventLoopPolicy"):
        cls = getattr(asyncio.unix_events, name, None)
        if isinstance(cls, type):
            return cls
    raise RuntimeError("cannot find asyncio's default Unix event loop policy class")


def install(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Make every default-policy loop a loop of ``kind``; return the factory."""
    expected = loop_class(kind)
    factory = _counting(expected)
    cls = default_policy_class()
    if not any("_loop_factory" in vars(base) for base in cls.__mro__):
        raise RuntimeError(f"{cls.__qualname__} has no _loop_factory: asyncio changed")
    # The policy calls self._loop_factory(): a staticmethod keeps it unbound.
    cls._loop_factory = staticmethod(factory)  # type: ignore[attr-defined]
    asyncio.set_event_loop_policy(None)
    probe = asyncio.new_event_loop()
    try:
        if type(probe) is not expected:
            raise RuntimeError(f"policy patch failed: got {type(probe)!r}")
    finally:
        probe.close()
    global _loops_created
    _loops_created = 0
    return factory


def add_mirror(module: Any, mirror: Mirror,
               factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Define ``mirror.name`` in ``module``: ``mirror.source`` on the loop under test."""
    source = getattr(module, mirror.source, None)
    if source is None:
        raise LookupError(f"{module.__name__} has no class {mirror.source}: "
                          "update runner.MIRRORS for this Python")

    def new_loop(self: Any) -> asyncio.AbstractEventLoop:
        return factory()

    cls = type(mirror.name, (source,),
               {mirror.method: new_loop, "__module__": module.__name__,
                "__qualname__": mirror.name})
    setattr(module, mirror.name, cls)


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def short_id(test: Any, module: str) -> str:
    """``Class.test_method``: the test id without the package and module."""
    tid: str = test.id()
    prefix = f"{PACKAGE}.{module}."
    return tid.removeprefix(prefix)


class JsonResult(unittest.TestResult):
    """Records one outcome per test (sub-test failures fail their test)."""

    def __init__(self, out: TextIO, module: str, test_timeout: float) -> None:
        super().__init__()
        self.out = out
        self.module = module
        self.test_timeout = test_timeout
        self.current: dict[str, Any] | None = None

    def emit(self, **record: Any) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _detail(self, err: Any, test: Any) -> str:
        text: str = self._exc_info_to_string(err, test)  # type: ignore[attr-defined]
        return text[-4000:]

    def startTest(self, test: Any) -> None:
        super().startTest(test)
        tid = short_id(test, self.module)
        self.current = {"id": tid, "outcome": None, "detail": "",
                        "t0": time.monotonic(), "loops0": _loops_created}
        self.emit(event="start", id=tid)
        # A hung test kills the process with a traceback on stderr; the
        # harness records it as "hang" and restarts after it.
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def _set(self, test: Any, outcome: str, detail: str = "") -> None:
        cur = self.current
        if cur is None or cur["id"] != short_id(test, self.module):
            # Not inside startTest/stopTest: a setUpModule/setUpClass/
            # tearDownClass/tearDownModule failure (an _ErrorHolder).
            self.emit(event="result", id=str(test), outcome=outcome, detail=detail,
                      loops=0, time=0.0)
            return
        # A sub-test failure is already recorded; keep the first problem.
        if cur["outcome"] in (None, "pass") or outcome in ("fail", "error") and \
                cur["outcome"] not in ("fail", "error"):
            cur["outcome"], cur["detail"] = outcome, detail

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._set(test, "pass")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._set(test, "fail", self._detail(err, test))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._set(test, "error", self._detail(err, test))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._set(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._set(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._set(test, kind, f"{subtest.id()}\n{self._detail(err, test)}")

    def stopTest(self, test: Any) -> None:
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        cur, self.current = self.current, None
        if cur is None:
            return
        # unittest reports neither success nor failure for a test whose only
        # problems were sub-test failures; _set() has recorded those already.
        outcome = cur["outcome"] or "error"
        detail = cur["detail"] or ("" if cur["outcome"] else "no outcome reported")
        self.emit(event="result", id=cur["id"], outcome=outcome, detail=detail,
                  loops=_loops_created - cur["loops0"],
                  time=round(time.monotonic() - cur["t0"], 3))


def build_suite(module_name: str, factory: Callable[[], asyncio.AbstractEventLoop],
                skip: set[str], only: set[str] | None) -> tuple[Any, unittest.TestSuite]:
    module = importlib.import_module(f"{PACKAGE}.{module_name}")
    drop: frozenset[str] = frozenset()
    mirror = MIRRORS.get(module_name)
    if mirror is not None:
        add_mirror(module, mirror, factory)
        drop = mirror.drop | {mirror.source}
    loaded = unittest.defaultTestLoader.loadTestsFromModule(module)
    if unittest.defaultTestLoader.errors:
        raise RuntimeError("\n".join(map(str, unittest.defaultTestLoader.errors)))
    tests = [t for t in iter_tests(loaded)
             if type(t).__name__ not in drop
             and short_id(t, module_name) not in skip
             and (only is None or short_id(t, module_name) in only)]
    return module, unittest.TestSuite(tests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help="a test.test_asyncio module, e.g. test_tasks")
    parser.add_argument("--loop", choices=("asyncio", "uringloop"), required=True)
    parser.add_argument("--out", help="JSON-lines file (default: stdout)")
    parser.add_argument("--skip", default="", help="file of test ids not to run")
    parser.add_argument("--only", default="", help="file of the only test ids to run")
    parser.add_argument("--test-timeout", type=float, default=60.0,
                        help="seconds before a single test counts as hung")
    args = parser.parse_args(argv)

    def read_ids(path: str) -> set[str]:
        with open(path) as f:
            return {line.strip() for line in f if line.strip()}

    skip = read_ids(args.skip) if args.skip else set()
    only = read_ids(args.only) if args.only else None
    if args.out:
        with open(args.out, "a") as out:
            return run(args.module, args.loop, out, skip, only, args.test_timeout)
    return run(args.module, args.loop, sys.stdout, skip, only, args.test_timeout)


def run(module: str, loop: str, out: TextIO, skip: set[str], only: set[str] | None,
        test_timeout: float) -> int:
    """Install ``loop``, run ``module``'s tests, write the records to ``out``."""
    factory = install(loop)
    try:
        _, suite = build_suite(module, factory, skip, only)
    except Exception:  # noqa: BLE001 - reported to the harness as a broken run
        out.write(json.dumps({"event": "load-error",
                              "detail": traceback.format_exc()[-4000:]}) + "\n")
        out.flush()
        return 2
    result = JsonResult(out, module, test_timeout)
    result.emit(event="meta", python=sys.version.split()[0], loop=loop,
                module=module, tests=suite.countTestCases(), pid=os.getpid())
    suite.run(result)
    result.emit(event="done", loops_total=_loops_created, tests_run=result.testsRun)
    return 0


if __name__ == "__main__":
    sys.exit(main())
