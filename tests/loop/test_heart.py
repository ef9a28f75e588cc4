"""The loop heart, on uringloop and stock asyncio: scheduling, lifecycle, tasks,
exception handling, debug mode, executors, async generators, contextvars and
the asyncio.Runner lifecycle.

Everything here is inherited from BaseEventLoop on paper; these tests make sure
the io_uring proactor underneath does not change any of it.  Stock asyncio is
the oracle: each assertion states what the stock loop does, and both loops
must pass it.  Cross-thread behaviour lives in test_heart_threads.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import uringloop

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

# Anything that waits for an event gives up after this long: a lost wakeup then
# fails the test instead of hanging it.  Never an assertion on speed.
GUARD = 30.0


# Scheduling and lifecycle run in both modes: uringloop's non-debug iteration
# is its own lean _run_once, debug mode uses BaseEventLoop's.
both_modes = pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])


@pytest.fixture
def loop(loop_factory: LoopFactory, request: pytest.FixtureRequest
         ) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh, not running loop of the kind under test; closed afterwards.

    Debug mode is on when the test is parametrized with debug=True.
    """
    lp = loop_factory()
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "debug" in callspec.params:
        lp.set_debug(callspec.params["debug"])
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.run_until_complete(lp.shutdown_asyncgens())
            lp.run_until_complete(lp.shutdown_default_executor())
            lp.close()


def _run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


# ---------------------------------------------------------------------------
# call_soon / call_later / call_at
# ---------------------------------------------------------------------------


@both_modes
def test_call_soon_is_fifo_and_passes_args(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    seen: list[tuple[Any, ...]] = []
    for i in range(100):
        loop.call_soon(lambda *a: seen.append(a), i, str(i))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [(i, str(i)) for i in range(100)]


@both_modes
def test_call_soon_from_callback_runs_next_iteration(loop: asyncio.AbstractEventLoop,
                                                     debug: bool) -> None:
    # A callback scheduled by a running callback waits for the next iteration:
    # everything already queued runs first.
    order: list[str] = []

    def first() -> None:
        order.append("first")
        loop.call_soon(order.append, "scheduled-by-first")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    _run(loop, asyncio.sleep(0.01))
    assert order == ["first", "second", "scheduled-by-first"]


@both_modes
def test_timers_fire_in_deadline_order(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    rng = random.Random(1234)
    offsets = [i / 2000 for i in range(60)]  # 0 .. 30 ms, all distinct
    rng.shuffle(offsets)
    # call_at with fixed deadlines: call_later's deadlines would depend on
    # how long scheduling takes (debug mode records a traceback per handle).
    base = loop.time()
    fired: list[float] = []
    handles = [loop.call_at(base + off, fired.append, off) for off in offsets]
    later = [loop.call_later(off, fired.append, -1.0) for off in (0.0, 0.01)]
    for h in later:
        h.cancel()
    done = loop.call_at(base + 0.05, loop.stop)
    loop.run_forever()
    assert fired == sorted(offsets)
    assert all(not h.cancelled() for h in handles) and not done.cancelled()


@both_modes
def test_call_soon_runs_before_due_timers(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    # BaseEventLoop moves due timers to the end of the ready queue, after what
    # call_soon() put there; the proactor must not reorder that.
    order: list[str] = []
    loop.call_later(0, order.append, "later0")
    loop.call_at(loop.time() - 10, order.append, "at-past")
    loop.call_soon(order.append, "soon")
    _run(loop, asyncio.sleep(0.01))
    assert order == ["soon", "at-past", "later0"]


@both_modes
def test_timer_when_and_never_early(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    resolution = time.get_clock_info("monotonic").resolution
    fired: dict[str, float] = {}
    t0 = loop.time()
    h_later = loop.call_later(0.02, lambda: fired.setdefault("later", loop.time()))
    t1 = loop.time()
    when = t1 + 0.03
    h_at = loop.call_at(when, lambda: fired.setdefault("at", loop.time()))
    assert isinstance(h_later, asyncio.TimerHandle)
    assert isinstance(h_at, asyncio.TimerHandle)
    assert t0 + 0.02 <= h_later.when() <= t1 + 0.02
    assert h_at.when() == when
    _run(loop, asyncio.sleep(0.05))
    # A timer may run up to the clock resolution early (BaseEventLoop's
    # end_time), never more.
    assert fired["later"] >= h_later.when() - resolution
    assert fired["at"] >= h_at.when() - resolution


@both_modes
def test_handle_cancel(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    ran: list[str] = []
    h = loop.call_soon(ran.append, "soon")
    t = loop.call_later(0.001, ran.append, "later")
    a = loop.call_at(loop.time(), ran.append, "at")
    assert not h.cancelled() and not t.cancelled() and not a.cancelled()
    for handle in (h, t, a):
        handle.cancel()
        handle.cancel()  # idempotent
        assert handle.cancelled()
    loop.call_soon(ran.append, "kept")
    _run(loop, asyncio.sleep(0.01))
    assert ran == ["kept"]


@both_modes
def test_cancel_from_earlier_callback_same_iteration(loop: asyncio.AbstractEventLoop,
                                                     debug: bool) -> None:
    # A handle cancelled by a callback that runs before it, in the same
    # iteration, must not run: ready handles are checked when popped.
    ran: list[str] = []
    victims: dict[str, asyncio.Handle] = {}

    def killer() -> None:
        ran.append("killer")
        victims["timer"].cancel()

    when = loop.time()
    loop.call_at(when, killer)
    victims["timer"] = loop.call_at(when + 1e-6, ran.append, "victim-timer")
    loop.call_soon(ran.append, "soon")
    loop.call_soon(lambda: victims["soon"].cancel())
    victims["soon"] = loop.call_soon(ran.append, "victim-soon")
    _run(loop, asyncio.sleep(0.01))
    assert ran == ["soon", "killer"]
    assert all(h.cancelled() for h in victims.values())


@both_modes
def test_many_cancelled_timers_do_not_block_the_loop(loop: asyncio.AbstractEventLoop,
                                                     debug: bool) -> None:
    # A far-away cancelled timer must not keep the loop asleep, and a heap
    # full of cancelled timers (BaseEventLoop compacts it) must still run the
    # live ones in order.
    far = [loop.call_later(3600 + i, pytest.fail, "cancelled timer ran") for i in range(500)]
    for h in far:
        h.cancel()
    fired: list[int] = []
    base = loop.time()
    for i in range(5):
        loop.call_at(base + 0.001 * (5 - i), fired.append, 5 - i)
    _run(loop, asyncio.sleep(0.02))
    assert fired == [1, 2, 3, 4, 5]


def test_time_is_monotonic(loop: asyncio.AbstractEventLoop) -> None:
    before = time.monotonic()
    samples = [loop.time() for _ in range(10_000)]
    after = time.monotonic()
    assert samples == sorted(samples)
    # loop.time() is the monotonic clock (asyncio's definition), not wall time.
    assert before <= samples[0] and samples[-1] <= after

    async def inside() -> list[float]:
        out = []
        for _ in range(50):
            out.append(loop.time())
            await asyncio.sleep(0)
        return out

    inner = _run(loop, inside())
    assert inner == sorted(inner) and inner[0] >= samples[-1]


# ---------------------------------------------------------------------------
# run_forever / stop / run_until_complete / close
# ---------------------------------------------------------------------------


@both_modes
def test_stop_before_run_runs_one_iteration(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    ran: list[int] = []
    loop.stop()
    loop.call_soon(ran.append, 1)
    loop.call_later(3600, ran.append, 2)  # must not keep the loop asleep
    loop.run_forever()
    assert ran == [1]
    assert not loop.is_running()
    # stop() is consumed: the next run_forever needs its own stop.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1]


@both_modes
def test_stop_from_callback_finishes_the_iteration(loop: asyncio.AbstractEventLoop,
                                                   debug: bool) -> None:
    ran: list[str] = []

    def a() -> None:
        ran.append("a")
        loop.call_soon(ran.append, "b")   # queued during the iteration: next run

    loop.call_soon(loop.stop)
    loop.call_soon(a)
    loop.run_forever()
    assert ran == ["a"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["a", "b"]


@both_modes
def test_run_forever_twice_and_is_running(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    states: list[bool] = []
    for _ in range(3):
        loop.call_soon(lambda: states.append(loop.is_running()))
        loop.call_soon(loop.stop)
        loop.run_forever()
        states.append(loop.is_running())
    assert states == [True, False] * 3


@both_modes
def test_run_until_complete_result_and_exception(loop: asyncio.AbstractEventLoop,
                                                 debug: bool) -> None:
    async def ok() -> str:
        await asyncio.sleep(0.001)
        return "result"

    async def bad() -> None:
        await asyncio.sleep(0)
        raise ZeroDivisionError("boom")

    assert loop.run_until_complete(ok()) == "result"
    with pytest.raises(ZeroDivisionError, match="boom"):
        loop.run_until_complete(bad())
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, 42)
    assert loop.run_until_complete(fut) == 42


@both_modes
def test_run_until_complete_stopped_early(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    async def stops_the_loop() -> None:
        loop.stop()
        await asyncio.sleep(3600)

    task = loop.create_task(stops_the_loop())
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(task)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


def test_run_until_complete_foreign_future(loop: asyncio.AbstractEventLoop,
                                           loop_factory: LoopFactory) -> None:
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="The future belongs to a different loop "
                                             "than the one specified as the loop argument"):
            loop.run_until_complete(fut)
        fut.cancel()
    finally:
        other.close()
    assert loop.run_until_complete(asyncio.sleep(0, result="usable")) == "usable"


def test_nested_run_raises(loop: asyncio.AbstractEventLoop, loop_factory: LoopFactory) -> None:
    errors: list[str] = []

    async def main() -> None:
        inner = asyncio.sleep(0)
        try:
            loop.run_until_complete(inner)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            inner.close()   # refused before it was wrapped in a task
        other = loop_factory()
        inner = asyncio.sleep(0)
        try:
            other.run_until_complete(inner)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            inner.close()
            other.close()
        # Last: CPython 3.13.0's run_forever() runs its cleanup even when its
        # running-loop check fails, which unsets the running loop (both loops).
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.run_until_complete(main())
    assert errors == ["This event loop is already running",
                      "Cannot run the event loop while another loop is running",
                      "This event loop is already running"]
    assert loop.run_until_complete(asyncio.sleep(0, result=1)) == 1


@both_modes
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_propagates(loop: asyncio.AbstractEventLoop, debug: bool,
                                                 exc_type: type[BaseException]) -> None:
    # KeyboardInterrupt and SystemExit are not handed to the exception
    # handler: they leave run_forever().  What was queued behind them is not
    # lost; it runs, in the same order, the next time the loop runs.
    order: list[str] = []

    def raiser() -> None:
        order.append("raiser")
        raise exc_type()

    loop.call_soon(raiser)
    loop.call_soon(order.append, "queued-after")
    loop.call_at(loop.time() - 1, order.append, "due-timer")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["raiser", "queued-after", "due-timer"]
    assert loop.run_until_complete(asyncio.sleep(0.001, result="usable")) == "usable"


@both_modes
def test_close_twice_and_while_running(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    errors: list[str] = []

    def try_close() -> None:
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(try_close)
    _run(loop, asyncio.sleep(0.001))
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()
    assert loop.run_until_complete(asyncio.sleep(0, result=1)) == 1
    loop.close()
    assert loop.is_closed()
    loop.close()  # a no-op
    assert loop.is_closed() and not loop.is_running()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_forever()


def test_close_never_run_loop_is_quiet(loop_factory: LoopFactory,
                                       caplog: pytest.LogCaptureFixture) -> None:
    # A loop created and closed without ever running (a common pattern in
    # libraries and test suites) must close cleanly, logging nothing.
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        lp = loop_factory()
        lp.call_soon(lambda: None)
        lp.close()
        assert lp.is_closed()
    # (asyncio's own slow-callback warnings, which a loaded machine can cause in
    # debug mode, are not what this is about.)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            or (r.levelno >= logging.WARNING and r.name != "asyncio")] == []


# ---------------------------------------------------------------------------
# futures, tasks, task factories
# ---------------------------------------------------------------------------


def test_create_future(loop: asyncio.AbstractEventLoop) -> None:
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    loop.call_soon(fut.set_result, "x")
    assert loop.run_until_complete(fut) == "x"


def test_create_task_name_and_context(loop: asyncio.AbstractEventLoop) -> None:
    async def read_var() -> str:
        await asyncio.sleep(0)
        value = var.get()
        var.set("set-in-task")
        return value

    token = var.set("at-creation")   # tasks copy the context when created
    named = loop.create_task(read_var(), name="my-task")
    assert named.get_name() == "my-task"
    assert named.get_loop() is loop
    unnamed = loop.create_task(read_var())
    assert unnamed.get_name().startswith("Task-")

    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    in_ctx = loop.create_task(read_var(), context=ctx)
    var.set("changed-after")
    try:
        assert loop.run_until_complete(asyncio.gather(named, unnamed, in_ctx)) == [
            "at-creation", "at-creation", "in-ctx"]
        assert var.get() == "changed-after"
    finally:
        var.reset(token)
    # The task ran *in* ctx (not a copy): its write is visible there.
    assert ctx[var] == "set-in-task"
    assert var.get() == "unset"


def test_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    calls: list[dict[str, Any]] = []

    class MyTask(asyncio.Task):  # type: ignore[type-arg]
        pass

    def factory(lp: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> MyTask:
        calls.append(kwargs)
        return MyTask(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def child() -> int:
        return 1

    async def main() -> list[Any]:
        t1 = loop.create_task(child(), name="named")
        t2 = asyncio.ensure_future(child())
        t3 = asyncio.create_task(child(), context=contextvars.copy_context())
        return [t1.get_name(), type(t1), type(t2), type(t3), await t1 + await t2 + await t3]

    main_task = loop.create_task(main())
    assert type(main_task) is MyTask
    assert loop.run_until_complete(main_task) == ["named", MyTask, MyTask, MyTask, 3]
    assert len(calls) == 4
    assert any("context" in kw for kw in calls)
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    plain = loop.create_task(child())
    assert type(plain) is not MyTask
    loop.run_until_complete(plain)


# ---------------------------------------------------------------------------
# the exception handler API
# ---------------------------------------------------------------------------


def test_exception_handler_set_get_and_callback_errors(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, dict[str, Any]]] = []

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append((lp, context))

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler

    def raiser() -> None:
        raise ValueError("in callback")

    ran_after: list[int] = []
    h = loop.call_soon(raiser)
    loop.call_soon(ran_after.append, 1)  # an error does not stop the iteration
    loop.call_exception_handler({"message": "custom", "extra": 7})
    _run(loop, asyncio.sleep(0.001))
    assert ran_after == [1]
    assert [lp for lp, _ in seen] == [loop, loop]
    custom, from_cb = seen[0][1], seen[1][1]
    assert custom == {"message": "custom", "extra": 7}
    assert from_cb["message"].startswith("Exception in callback ")
    assert "raiser" in from_cb["message"]
    assert isinstance(from_cb["exception"], ValueError)
    assert from_cb["handle"] is h
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_default_exception_handler_logs(loop: asyncio.AbstractEventLoop,
                                        caplog: pytest.LogCaptureFixture) -> None:
    loop.set_exception_handler(None)
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        raise KeyError("logged")
    except KeyError as exc:
        loop.call_exception_handler({"message": "via call_exception_handler",
                                     "exception": exc})
    loop.default_exception_handler({"message": "direct default"})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert [r.getMessage().splitlines()[0] for r in records] == [
        "via call_exception_handler", "direct default"]
    assert records[0].exc_info is not None and records[0].exc_info[0] is KeyError


def test_exception_handler_that_raises(loop: asyncio.AbstractEventLoop,
                                       caplog: pytest.LogCaptureFixture) -> None:
    def bad_handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(bad_handler)
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_soon(lambda: 1 / 0)
    loop.call_exception_handler({"message": "direct"})
    _run(loop, asyncio.sleep(0.001))
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 2
    for r in records:
        assert r.getMessage().startswith("Unhandled error in exception handler")
        assert r.exc_info is not None and r.exc_info[0] is RuntimeError
    assert loop.run_until_complete(asyncio.sleep(0, result="still fine")) == "still fine"


def test_unretrieved_task_exception_reaches_handler(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    async def fails() -> None:
        raise OSError("never retrieved")

    task = loop.create_task(fails())
    _run(loop, asyncio.sleep(0.001))
    assert task.done()
    del task
    gc.collect()
    assert [c["message"] for c in seen] == ["Task exception was never retrieved"]
    assert isinstance(seen[0]["exception"], OSError)


# ---------------------------------------------------------------------------
# debug mode
# ---------------------------------------------------------------------------


def test_set_get_debug(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_warning(loop: asyncio.AbstractEventLoop,
                               caplog: pytest.LogCaptureFixture) -> None:
    loop.set_debug(True)
    # A threshold of zero makes every callback "slow": the warning path is
    # exercised without measuring anything.
    loop.slow_callback_duration = 0.0

    def slow_callback() -> None:
        pass

    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.call_soon(slow_callback)
    _run(loop, asyncio.sleep(0.001))
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any(m.startswith("Executing <Handle ") and "slow_callback()" in m
               and " took " in m for m in msgs), msgs


def test_debug_detects_call_soon_from_another_thread(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_debug(True)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    async def main() -> None:
        t = threading.Thread(target=worker)
        t.start()
        await loop.run_in_executor(None, t.join)

    _run(loop, main())
    assert [str(e) for e in errors] == [
        "Non-thread-safe operation invoked on an event loop other than the current one"]


# ---------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------


def test_run_in_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    main_thread = threading.get_ident()

    def work(n: int) -> tuple[int, int]:
        return sum(range(n)), threading.get_ident()

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(loop.run_in_executor(None, work, n)
                                      for n in range(50)))

    results = _run(loop, main())
    assert [r[0] for r in results] == [sum(range(n)) for n in range(50)]
    assert main_thread not in {r[1] for r in results}

    def boom() -> None:
        raise LookupError("from the executor")

    with pytest.raises(LookupError, match="from the executor"):
        _run(loop, loop.run_in_executor(None, boom))


def test_run_in_custom_executor(loop: asyncio.AbstractEventLoop) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom") as pool:
        name = _run(loop, loop.run_in_executor(pool, lambda: threading.current_thread().name))
        assert name.startswith("custom")

    class Inline(concurrent.futures.Executor):
        """Runs the call at submit(): any Executor is accepted, not only a pool."""

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
            f: concurrent.futures.Future[Any] = concurrent.futures.Future()
            f.set_result(fn(*args, **kwargs))
            return f

    assert _run(loop, loop.run_in_executor(Inline(), pow, 2, 10)) == 1024


def test_set_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="default-set")
    loop.set_default_executor(pool)
    name = _run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("default-set")

    class NotAPool(concurrent.futures.Executor):
        pass

    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
        loop.set_default_executor(NotAPool())
    # The rejected executor did not replace the pool.
    name = _run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("default-set")
    loop.run_until_complete(loop.shutdown_default_executor())


def test_shutdown_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    workers: list[threading.Thread] = []
    _run(loop, loop.run_in_executor(None, lambda: workers.append(threading.current_thread())))
    loop.run_until_complete(loop.shutdown_default_executor())
    assert workers and not workers[0].is_alive()
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)
    # Calling it again, or when no executor was ever made, is harmless.
    loop.run_until_complete(loop.shutdown_default_executor())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the timeout parameter is 3.12+")
def test_shutdown_default_executor_with_timeout(loop: asyncio.AbstractEventLoop) -> None:
    # (What happens when the timeout expires changed between 3.12.x releases;
    # only the loop-independent part is checked: a pool that finishes in time.)
    done: list[str] = []
    _run(loop, loop.run_in_executor(None, done.append, "work"))
    loop.run_until_complete(
        loop.shutdown_default_executor(timeout=GUARD))  # type: ignore[call-arg]
    assert done == ["work"]
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)


# ---------------------------------------------------------------------------
# async generators
# ---------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_unfinished(loop: asyncio.AbstractEventLoop) -> None:
    events: list[str] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # finalization may await
            events.append("finalized")

    gen = agen()

    async def first_step() -> int:
        # The loop's firstiter hook only sees generators first iterated while
        # it runs.
        return await gen.__anext__()

    assert loop.run_until_complete(first_step()) == 1
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["finalized"]


def test_asyncgen_collected_while_running_is_closed(loop: asyncio.AbstractEventLoop) -> None:
    events: list[str] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")

    async def main() -> None:
        gen = agen()
        await gen.__anext__()
        del gen
        gc.collect()   # the finalizer hook schedules aclose() on the loop
        for _ in range(10):
            if events:
                break
            await asyncio.sleep(0)

    _run(loop, main())
    assert events == ["finalized"]


# ---------------------------------------------------------------------------
# contextvars
# ---------------------------------------------------------------------------


@both_modes
def test_callbacks_run_in_a_copy_of_the_current_context(loop: asyncio.AbstractEventLoop,
                                                        debug: bool) -> None:
    seen: list[tuple[str, str]] = []

    def cb(tag: str) -> None:
        seen.append((tag, var.get()))
        var.set("written-by-" + tag)  # must not leak into the caller's context

    token = var.set("at-schedule")
    try:
        loop.call_soon(cb, "soon")
        loop.call_later(0.001, cb, "later")
        loop.call_at(loop.time() + 0.002, cb, "at")
        var.set("changed-after")
        _run(loop, asyncio.sleep(0.01))
        assert var.get() == "changed-after"
    finally:
        var.reset(token)
    assert seen == [("soon", "at-schedule"), ("later", "at-schedule"), ("at", "at-schedule")]


@both_modes
def test_callbacks_explicit_context(loop: asyncio.AbstractEventLoop, debug: bool) -> None:
    ctx = contextvars.copy_context()
    ctx.run(var.set, "explicit")
    seen: list[tuple[str, str]] = []

    def cb(tag: str) -> None:
        seen.append((tag, var.get()))
        var.set("written-by-" + tag)   # runs *in* ctx: visible there afterwards

    loop.call_soon(cb, "soon", context=ctx)
    loop.call_later(0.001, cb, "later", context=ctx)
    loop.call_at(loop.time() + 0.002, cb, "at", context=ctx)
    _run(loop, asyncio.sleep(0.01))
    assert seen == [("soon", "explicit"), ("later", "written-by-soon"),
                    ("at", "written-by-later")]
    assert ctx[var] == "written-by-at"
    assert var.get() == "unset"


def test_call_soon_threadsafe_context(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[tuple[str, str]] = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "explicit")

    def worker() -> None:
        # A new thread starts with an empty context; the callback gets a copy
        # of the *calling thread's* context.
        var.set("worker-thread")
        loop.call_soon_threadsafe(lambda: seen.append(("default", var.get())))
        loop.call_soon_threadsafe(lambda: seen.append(("explicit", var.get())), context=ctx)

    async def main() -> None:
        t = threading.Thread(target=worker)
        t.start()
        await loop.run_in_executor(None, t.join)
        for _ in range(10):
            if len(seen) == 2:
                break
            await asyncio.sleep(0)

    _run(loop, main())
    assert seen == [("default", "worker-thread"), ("explicit", "explicit")]
    assert var.get() == "unset"


def test_tasks_copy_context_and_executor_does_not(loop: asyncio.AbstractEventLoop) -> None:
    async def child() -> str:
        value = var.get()
        var.set("child-wrote")
        return value

    async def main() -> tuple[str, str, str, str, str]:
        var.set("main")
        from_task = await asyncio.create_task(child())
        after_child = var.get()   # the child's write stayed in its copy
        # run_in_executor does not carry the context; asyncio.to_thread does.
        in_executor = await loop.run_in_executor(None, var.get)
        in_to_thread = await asyncio.to_thread(var.get)
        return from_task, after_child, in_executor, in_to_thread, var.get()

    assert _run(loop, main()) == ("main", "main", "unset", "main", "main")
    assert var.get() == "unset"


# ---------------------------------------------------------------------------
# asyncio.Runner / asyncio.run / uringloop.run lifecycle
# ---------------------------------------------------------------------------


def test_runner_lifecycle(loop_factory: LoopFactory) -> None:
    events: list[str] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("agen finalized")

    gens: list[Any] = []

    async def first() -> asyncio.AbstractEventLoop:
        gen = agen()
        gens.append(gen)   # kept alive: only Runner.close() finalizes it
        await gen.__anext__()
        await asyncio.get_running_loop().run_in_executor(None, events.append, "executor")
        return asyncio.get_running_loop()

    async def second() -> str:
        return var.get()

    ctx = contextvars.copy_context()
    ctx.run(var.set, "runner-ctx")
    with asyncio.Runner(loop_factory=loop_factory, debug=True) as runner:
        lp = runner.get_loop()
        assert lp.get_debug()
        assert runner.run(first()) is lp
        assert not lp.is_running() and not lp.is_closed()
        assert runner.run(second(), context=ctx) == "runner-ctx"
        assert events == ["executor"]
    assert lp.is_closed()
    assert events == ["executor", "agen finalized"]
    gens.clear()


def test_runner_cancels_leftover_tasks(loop_factory: LoopFactory) -> None:
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("background cancelled")
            raise

    async def main() -> None:
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        raise ValueError("main failed")

    with pytest.raises(ValueError, match="main failed"), \
            asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert events == ["background cancelled"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory(loop_factory: LoopFactory,
                                       request: pytest.FixtureRequest) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.001)
        return "done"

    assert asyncio.run(main(), loop_factory=loop_factory) == "done"  # type: ignore[call-arg]
    want_uring = request.node.callspec.params["loop_factory"] == "uringloop"
    assert isinstance(loops[0], uringloop.Loop) is want_uring
    assert loops[0].is_closed()


def test_uringloop_run(loop_factory: LoopFactory) -> None:
    async def main() -> int:
        await asyncio.sleep(0.001)
        return 5

    assert uringloop.run(main(), loop_factory=loop_factory, debug=True) == 5
    with pytest.raises(ValueError, match="a coroutine was expected, got 123"):
        uringloop.run(123)  # type: ignore[arg-type]


def test_uringloop_run_default_is_uringloop() -> None:
    async def main() -> type:
        return type(asyncio.get_running_loop())

    assert uringloop.run(main()) is uringloop.Loop
