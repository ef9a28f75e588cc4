"""Bad arguments and calls on a closed loop: uringloop raises exactly what stock asyncio raises.

Each case is one call.  It is made on a fresh stock SelectorEventLoop (the
oracle) and on a fresh loop of the kind under test, in debug and non-debug
mode (debug mode validates callbacks up front; non-debug mode fails later,
when the handle runs).  What is compared:

* the call's outcome: what it returned (type), or the exception it raised
  (type and message, with memory addresses masked);
* then, on a loop that is not closed, one short run of the loop: its result
  (the loop is still usable), which of our callbacks ran, the exception-handler
  calls it caused (message and exception type) and the warnings emitted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Case = Callable[[asyncio.AbstractEventLoop], Any]

GUARD = 30.0

_called: list[str] = []


def _cb(*args: Any) -> None:
    _called.append("cb" + repr(args))


async def _coro_fn() -> None:
    _called.append("coro ran")


def _with_coro(call: Callable[[asyncio.AbstractEventLoop, Any], Any]) -> Case:
    """A case that passes a coroutine object; it is closed afterwards whatever
    happened, so no "never awaited" warning depends on garbage collection."""
    def case(lp: asyncio.AbstractEventLoop) -> Any:
        coro = _coro_fn()
        try:
            return call(lp, coro)
        finally:
            coro.close()
    return case


def _in_thread(call: Case) -> Case:
    """A case whose call is made from a non-main thread; re-raises its error here."""
    def case(lp: asyncio.AbstractEventLoop) -> Any:
        box: list[Any] = []
        errors: list[BaseException] = []

        def body() -> None:
            try:
                box.append(call(lp))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        t = threading.Thread(target=body)
        t.start()
        t.join(GUARD)
        if errors:
            raise errors[0]
        return box[0]
    return case


def _foreign_future(lp: asyncio.AbstractEventLoop) -> Any:
    other = asyncio.SelectorEventLoop()
    try:
        fut = other.create_future()
        try:
            return lp.run_until_complete(fut)
        finally:
            fut.cancel()
    finally:
        other.close()


class _NotAPool(concurrent.futures.Executor):
    pass


def _generator() -> Iterator[int]:
    yield 1


# Cases on a loop that is open.
OPEN_CASES: dict[str, Case] = {
    # non-callables where a callback is expected
    "call_soon-int": lambda lp: lp.call_soon(123),
    "call_soon-None": lambda lp: lp.call_soon(None),
    "call_later-int": lambda lp: lp.call_later(0, 123),
    "call_at-int": lambda lp: lp.call_at(lp.time(), 123),
    "call_soon_threadsafe-int": lambda lp: lp.call_soon_threadsafe(123),
    "call_soon_threadsafe-str-from-thread": _in_thread(lambda lp: lp.call_soon_threadsafe("x")),
    # coroutines and coroutine functions where a callback is expected
    "call_soon-coroutine": _with_coro(lambda lp, c: lp.call_soon(c)),
    "call_soon-coroutine-function": lambda lp: lp.call_soon(_coro_fn),
    "call_later-coroutine": _with_coro(lambda lp, c: lp.call_later(0, c)),
    "call_later-coroutine-function": lambda lp: lp.call_later(0, _coro_fn),
    "call_at-coroutine-function": lambda lp: lp.call_at(lp.time(), _coro_fn),
    "call_soon_threadsafe-coroutine": _with_coro(lambda lp, c: lp.call_soon_threadsafe(c)),
    "call_soon_threadsafe-coroutine-function": lambda lp: lp.call_soon_threadsafe(_coro_fn),
    "run_in_executor-coroutine": _with_coro(lambda lp, c: lp.run_in_executor(None, c)),
    "run_in_executor-coroutine-function": lambda lp: lp.run_in_executor(None, _coro_fn),
    "add_signal_handler-coroutine": _with_coro(
        lambda lp, c: lp.add_signal_handler(signal.SIGUSR1, c)),
    "add_signal_handler-coroutine-function": lambda lp: lp.add_signal_handler(
        signal.SIGUSR1, _coro_fn),
    # delays and deadlines
    "call_later-negative": lambda lp: lp.call_later(-5, _cb, "negative"),
    "call_later-nan": lambda lp: lp.call_later(float("nan"), _cb, "nan"),
    "call_later-minus-inf": lambda lp: lp.call_later(float("-inf"), _cb, "-inf"),
    "call_later-inf": lambda lp: lp.call_later(float("inf"), _cb, "inf"),
    "call_later-str": lambda lp: lp.call_later("1", _cb),
    "call_later-None": lambda lp: lp.call_later(None, _cb),
    "call_at-nan": lambda lp: lp.call_at(float("nan"), _cb, "at-nan"),
    "call_at-past": lambda lp: lp.call_at(-1e9, _cb, "at-past"),
    "call_at-None": lambda lp: lp.call_at(None, _cb),
    # odd keyword arguments
    "call_soon-bad-context": lambda lp: lp.call_soon(_cb, context="not a context"),
    "call_soon-unknown-kwarg": lambda lp: lp.call_soon(_cb, bogus=1),
    "call_later-unknown-kwarg": lambda lp: lp.call_later(0, _cb, bogus=1),
    # wrong types to run_until_complete / create_task
    "run_until_complete-int": lambda lp: lp.run_until_complete(123),
    "run_until_complete-None": lambda lp: lp.run_until_complete(None),
    "run_until_complete-coroutine-function": lambda lp: lp.run_until_complete(_coro_fn),
    "run_until_complete-generator": lambda lp: lp.run_until_complete(_generator()),
    "run_until_complete-foreign-future": _foreign_future,
    "create_task-int": lambda lp: lp.create_task(123),
    "create_task-coroutine-function": lambda lp: lp.create_task(_coro_fn),
    "create_task-future": lambda lp: lp.create_task(lp.create_future()),
    "create_task-generator": lambda lp: lp.create_task(_generator()),
    # wrong types to the setters
    "set_task_factory-int": lambda lp: lp.set_task_factory(123),
    "set_task_factory-str": lambda lp: lp.set_task_factory("factory"),
    "set_exception_handler-int": lambda lp: lp.set_exception_handler(123),
    "set_default_executor-not-a-pool": lambda lp: lp.set_default_executor(_NotAPool()),
    "set_default_executor-None": lambda lp: lp.set_default_executor(None),
    # wrong types to run_in_executor
    "run_in_executor-int": lambda lp: lp.run_in_executor(None, 123),
    "run_in_executor-bad-executor": lambda lp: lp.run_in_executor("not an executor", _cb),
    # signals
    "add_signal_handler-non-main-thread": _in_thread(
        lambda lp: lp.add_signal_handler(signal.SIGUSR1, _cb)),
    "remove_signal_handler-non-main-thread": _in_thread(
        lambda lp: lp.remove_signal_handler(signal.SIGUSR1)),
    "add_signal_handler-str": lambda lp: lp.add_signal_handler("SIGUSR1", _cb),
    "add_signal_handler-zero": lambda lp: lp.add_signal_handler(0, _cb),
    "add_signal_handler-SIGKILL": lambda lp: lp.add_signal_handler(signal.SIGKILL, _cb),
    "remove_signal_handler-float": lambda lp: lp.remove_signal_handler(10.0),
}

# Cases on a loop that has been closed.
CLOSED_CASES: dict[str, Case] = {
    "call_soon": lambda lp: lp.call_soon(_cb),
    "call_later": lambda lp: lp.call_later(0, _cb),
    "call_at": lambda lp: lp.call_at(lp.time(), _cb),
    "call_soon_threadsafe": lambda lp: lp.call_soon_threadsafe(_cb),
    "call_soon_threadsafe-from-thread": _in_thread(lambda lp: lp.call_soon_threadsafe(_cb)),
    "run_forever": lambda lp: lp.run_forever(),
    "run_until_complete-coroutine": _with_coro(lambda lp, c: lp.run_until_complete(c)),
    "run_until_complete-future": lambda lp: lp.run_until_complete(lp.create_future()),
    "create_task": _with_coro(lambda lp, c: lp.create_task(c)),
    "create_future": lambda lp: lp.create_future(),
    "run_in_executor": lambda lp: lp.run_in_executor(None, _cb),
    "add_signal_handler": lambda lp: lp.add_signal_handler(signal.SIGUSR1, _cb),
    "remove_signal_handler": lambda lp: lp.remove_signal_handler(signal.SIGUSR1),
    "stop": lambda lp: lp.stop(),
    "close-again": lambda lp: lp.close(),
    "is_running": lambda lp: lp.is_running(),
    "time": lambda lp: lp.time() > 0,
    "set_debug": lambda lp: lp.set_debug(True),
    "call_exception_handler": lambda lp: lp.call_exception_handler({"message": "closed"}),
    "set_default_executor": lambda lp: lp.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(1)),
    "shutdown_default_executor-coroutine": _with_coro(
        lambda lp, c: type(lp.shutdown_default_executor())),
}


def _mask(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", text)


def _handler_summary(context: dict[str, Any]) -> tuple[str, str]:
    exc = context.get("exception")
    return _mask(str(context.get("message"))), type(exc).__name__ if exc else "-"


def _observe(lp: asyncio.AbstractEventLoop, case: Case, debug: bool, closed: bool
             ) -> dict[str, Any]:
    """Make the call on lp and describe everything observable about it."""
    seen: list[tuple[str, str]] = []
    lp.set_debug(debug)
    lp.set_exception_handler(lambda loop, ctx: seen.append(_handler_summary(ctx)))
    _called.clear()
    if closed:
        lp.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case(lp)
        except Exception as exc:  # noqa: BLE001 - the outcome under comparison
            outcome: tuple[str, ...] = ("raised", type(exc).__name__, _mask(str(exc)))
            result = None
            del exc
        else:
            outcome = ("returned", type(result).__name__)
        usable: Any = None
        if not lp.is_closed():
            try:
                if isinstance(result, asyncio.Future) and not result.done():
                    # e.g. run_in_executor(None, 123): let it fail, unobserved.
                    lp.run_until_complete(asyncio.wait([result], timeout=GUARD))
                usable = lp.run_until_complete(asyncio.sleep(0.001, result="usable"))
                lp.run_until_complete(lp.shutdown_default_executor())
            except Exception as exc:  # noqa: BLE001 - e.g. call_at("soon") breaks the heap
                usable = ("raised", type(exc).__name__, _mask(str(exc)))
                del exc
        del result
        # "exception was never retrieved" reaches the handler now; the young
        # generations hold everything this case made, and are cheap to scan.
        gc.collect(1)
        warned = sorted({(w.category.__name__, _mask(str(w.message))) for w in caught})
    return {"outcome": outcome, "usable": usable, "called": list(_called),
            "handler": seen, "warnings": warned}


def _observe_fresh(factory: LoopFactory, case: Case, debug: bool, closed: bool
                   ) -> dict[str, Any]:
    lp = factory()
    try:
        return _observe(lp, case, debug, closed)
    finally:
        if not lp.is_closed():
            lp.close()
        # Whatever a case installed, nothing may stay behind.
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


@pytest.fixture(params=[False, True], ids=["nodebug", "debug"])
def debug(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _mismatches(cases: dict[str, Case], factory: LoopFactory, debug: bool, closed: bool
                ) -> dict[str, dict[str, Any]]:
    # All cases in one test (per loop and mode): each case is cheap, pytest's
    # per-test overhead is not.  A failure lists every case that differs.
    diffs: dict[str, dict[str, Any]] = {}
    for name, case in cases.items():
        expected = _observe_fresh(asyncio.SelectorEventLoop, case, debug, closed)
        actual = _observe_fresh(factory, case, debug, closed)
        if actual != expected:
            diffs[name] = {k: (actual[k], "stock:", expected[k])
                           for k in expected if actual[k] != expected[k]}
    return diffs


def test_bad_arguments(debug: bool, loop_factory: LoopFactory) -> None:
    assert _mismatches(OPEN_CASES, loop_factory, debug, closed=False) == {}


def test_calls_on_closed_loop(debug: bool, loop_factory: LoopFactory) -> None:
    assert _mismatches(CLOSED_CASES, loop_factory, debug, closed=True) == {}


def test_oracle_spot_checks() -> None:
    """A few stock outcomes spelled out, so a broken harness cannot pass vacuously."""
    def outcome(case: Case, debug: bool, closed: bool = False) -> tuple[str, ...]:
        return _observe_fresh(asyncio.SelectorEventLoop, case, debug, closed)["outcome"]

    assert outcome(OPEN_CASES["call_soon-int"], True) == (
        "raised", "TypeError", "a callable object was expected by call_soon(), got 123")
    assert outcome(OPEN_CASES["call_soon-coroutine-function"], True) == (
        "raised", "TypeError", "coroutines cannot be used with call_soon()")
    assert outcome(OPEN_CASES["call_soon-int"], False) == ("returned", "Handle")
    assert outcome(OPEN_CASES["run_until_complete-int"], False)[:2] == ("raised", "TypeError")
    assert outcome(OPEN_CASES["add_signal_handler-non-main-thread"], False)[:2] == (
        "raised", "RuntimeError")
    assert outcome(CLOSED_CASES["call_soon"], False, closed=True) == (
        "raised", "RuntimeError", "Event loop is closed")
    nondebug_int = _observe_fresh(asyncio.SelectorEventLoop, OPEN_CASES["call_soon-int"],
                                  False, False)
    assert nondebug_int["handler"] == [("Exception in callback 123()", "TypeError")]
