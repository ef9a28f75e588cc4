"""The loop's C paths (uringloop._speedups) against stock asyncio.

call_soon, running ready handles, one iteration (_run_once) and the stream
transport's receive and write run in C outside debug mode, each handing
every case it does not handle itself to the Python it replaces.  These tests
drive the edges of that hand-off -- argument forms, handle subclasses, a
patched clock, odd timer deadlines, unusual buffers, callbacks that raise --
on both loops, with stock asyncio as the oracle.
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import math
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

import uringloop

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
var: contextvars.ContextVar[str] = contextvars.ContextVar("accel_var", default="unset")
GUARD = 30.0


@pytest.fixture
def loop(loop_factory: LoopFactory) -> Any:
    lp = loop_factory()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.close()


@pytest.fixture
def stock() -> Any:
    """A stock asyncio loop beside the one under test: the oracle."""
    lp = asyncio.SelectorEventLoop()
    try:
        yield lp
    finally:
        lp.close()


def _run_briefly(loop: asyncio.AbstractEventLoop, n: int = 3) -> None:
    for _ in range(n):
        loop.run_until_complete(asyncio.sleep(0))


def test_call_soon_context_keyword_interned_or_not(loop: asyncio.AbstractEventLoop) -> None:
    # _asyncio's futures pass "context" as a string of their own making.
    seen: list[str] = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    key = "".join(["con", "text"])          # equal to "context", not the same object
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), **{key: ctx})
    loop.call_soon(lambda: seen.append(var.get()))
    _run_briefly(loop)
    assert seen == ["in-ctx", "in-ctx", "unset"]


def test_call_soon_passes_positional_args(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[tuple[Any, ...]] = []
    h = loop.call_soon(lambda *a: seen.append(a), 1, "two", None)
    assert isinstance(h, asyncio.Handle) and type(h) is asyncio.Handle
    assert not h.cancelled()
    assert "lambda" in repr(h)
    _run_briefly(loop)
    assert seen == [(1, "two", None)]


@pytest.mark.parametrize("call", ["no_args", "bad_keyword", "two_keywords"])
def test_call_soon_argument_errors_read_as_stock(loop: asyncio.AbstractEventLoop,
                                                 call: str,
                                                 stock: asyncio.AbstractEventLoop) -> None:
    def attempt(lp: asyncio.AbstractEventLoop) -> str:
        with pytest.raises(TypeError) as info:
            if call == "no_args":
                lp.call_soon()  # type: ignore[call-arg]
            elif call == "bad_keyword":
                lp.call_soon(print, bogus=1)  # type: ignore[call-arg]
            else:
                lp.call_soon(print, context=None, bogus=1)  # type: ignore[call-arg]
        return str(info.value)
    assert attempt(loop) == attempt(stock)


def test_call_soon_on_closed_loop_raises(loop_factory: LoopFactory) -> None:
    lp = loop_factory()
    lp.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        lp.call_soon(print)


def test_failing_callback_is_reported_and_the_loop_goes_on(
        loop: asyncio.AbstractEventLoop) -> None:
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))
    after: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    h = loop.call_soon(boom)
    loop.call_soon(after.append, 1)
    _run_briefly(loop)
    assert after == [1]
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"].startswith("Exception in callback ")
    assert "boom" in ctx["message"]
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["handle"] is h


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_callback_raising_exit_exceptions_propagates(loop: asyncio.AbstractEventLoop,
                                                     exc_type: type) -> None:
    def stop_now() -> None:
        raise exc_type()

    later: list[int] = []
    loop.call_soon(stop_now)
    loop.call_soon(later.append, 1)
    with pytest.raises(exc_type):
        loop.run_forever()
    # The callback queued behind it was not lost.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert later == [1]


def test_handle_subclass_runs_its_own_run(loop: asyncio.AbstractEventLoop) -> None:
    ran: list[str] = []

    class Traced(asyncio.Handle):
        def _run(self) -> None:
            ran.append("traced")
            super()._run()

    loop._ready.append(Traced(ran.append, ("callback",), loop))  # type: ignore[attr-defined]
    _run_briefly(loop)
    assert ran == ["traced", "callback"]


def test_cancelled_handle_does_not_run(loop: asyncio.AbstractEventLoop) -> None:
    ran: list[int] = []
    loop.call_soon(ran.append, 1).cancel()
    loop.call_later(0, ran.append, 2).cancel()
    loop.call_soon(ran.append, 3)
    _run_briefly(loop)
    assert ran == [3]


def test_instance_patched_time_drives_the_timers(loop: asyncio.AbstractEventLoop) -> None:
    fired: list[str] = []
    real_time = loop.time
    loop.call_later(1000, fired.append, "far")
    loop.time = lambda: real_time() + 2000  # type: ignore[method-assign]
    try:
        _run_briefly(loop)
    finally:
        del loop.time  # type: ignore[method-assign]
    assert fired == ["far"]


def test_class_patched_time_drives_the_timers(loop_factory: LoopFactory) -> None:
    probe = loop_factory()
    base = type(probe)
    probe.close()
    fired: list[str] = []

    class Shifted(base):  # type: ignore[valid-type, misc]
        shift = 0.0

        def time(self) -> float:
            return super().time() + self.shift

    lp = Shifted()
    try:
        lp.call_later(1000, fired.append, "far")
        _run_briefly(lp)
        assert fired == []
        lp.shift = 2000.0
        _run_briefly(lp)
        assert fired == ["far"]
    finally:
        lp.close()


@pytest.mark.parametrize("when", [float("nan"), float("-inf"), -1e9, 0])
def test_odd_deadlines_run_at_once(loop: asyncio.AbstractEventLoop, when: float) -> None:
    fired: list[float] = []
    loop.call_at(when, fired.append, when)
    _run_briefly(loop)
    assert len(fired) == 1 and (fired[0] == when or math.isnan(fired[0]))


def test_many_cancelled_timers_are_compacted(loop: asyncio.AbstractEventLoop) -> None:
    handles = [loop.call_later(1000 + i, print) for i in range(300)]
    for h in handles[:250]:
        h.cancel()
    fired: list[int] = []
    loop.call_later(0, fired.append, 1)
    _run_briefly(loop)
    assert fired == [1]
    assert len(loop._scheduled) == 50  # type: ignore[attr-defined]
    for h in handles[250:]:
        h.cancel()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "int-array",
                                  "sliced-view", "empty"])
async def test_write_of_each_buffer_kind(kind: str) -> None:
    loop = asyncio.get_running_loop()
    payload = {
        "bytes": b"abc" * 1000,
        "bytearray": bytearray(b"xyz" * 1000),
        "memoryview": memoryview(b"mv" * 1000),
        "int-array": memoryview(array.array("i", range(100))),
        "sliced-view": memoryview(b"0123456789" * 100)[10:-10],
        "empty": b"",
    }[kind]
    expected = bytes(payload)
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        transport.write(payload)
        got = b""
        deadline = loop.time() + GUARD
        while len(got) < len(expected) and loop.time() < deadline:
            try:
                got += await asyncio.wait_for(loop.sock_recv(b, 65536), GUARD)
            except asyncio.TimeoutError:
                break
        assert got == expected
        transport.close()
        await asyncio.sleep(0)
    finally:
        b.close()


@pytest.mark.asyncio
async def test_write_of_non_contiguous_view_raises_as_stock() -> None:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        view = memoryview(b"abcdef")[::2]
        handled: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda lp, c: handled.append(c))
        errors: list[BaseException] = []
        try:
            transport.write(view)
        except BaseException as exc:  # noqa: BLE001 - whatever stock does, we do
            errors.append(exc)
        # Stock's socket.send() refuses the view: raised here, or a fatal write
        # error that closes the transport.  Either way nothing reaches the peer.
        await asyncio.sleep(0.01)
        assert errors or (transport.is_closing() and handled)
        transport.close()
        await asyncio.sleep(0)
    finally:
        b.close()


@pytest.mark.asyncio
async def test_protocol_switched_inside_data_received() -> None:
    loop = asyncio.get_running_loop()
    got_first: list[bytes] = []
    got_second: list[bytes] = []
    switched = asyncio.Event()

    class Second(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got_second.append(data)

    class First(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            got_first.append(data)
            self.transport.set_protocol(Second())
            switched.set()

    a, b = socket.socketpair()
    try:
        transport, _ = await loop.create_connection(First, sock=a)
        b.send(b"one")
        await asyncio.wait_for(switched.wait(), GUARD)
        b.send(b"two")
        for _ in range(200):
            if got_second:
                break
            await asyncio.sleep(0.005)
        assert b"".join(got_first) == b"one"
        assert b"".join(got_second) == b"two"
        transport.close()
        await asyncio.sleep(0)
    finally:
        b.close()


@pytest.mark.asyncio
async def test_data_received_error_is_fatal_as_stock() -> None:
    loop = asyncio.get_running_loop()
    lost: list[BaseException | None] = []
    handled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, c: handled.append(c))
    done = asyncio.Event()

    class Bad(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            raise ZeroDivisionError("bad protocol")

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)
            done.set()

    a, b = socket.socketpair()
    try:
        await loop.create_connection(Bad, sock=a)
        b.send(b"x")
        await asyncio.wait_for(done.wait(), GUARD)
        assert isinstance(lost[0], ZeroDivisionError)
        assert handled and handled[0]["message"] == (
            "Fatal error: protocol.data_received() call failed.")
    finally:
        b.close()


def test_unrepresentable_deadline_raises_as_stock(loop: asyncio.AbstractEventLoop) -> None:
    # Stock computes the poll timeout as ``when - time()``: an int too large
    # for a float raises OverflowError out of the iteration.  So does ours.
    h = loop.call_at(10**400, print)
    fut = loop.create_future()
    with pytest.raises(OverflowError):
        loop.run_until_complete(fut)
    h.cancel()
    loop.call_soon(fut.set_result, None)
    loop.run_until_complete(fut)


# -- get_debug, is_running, time, create_future, create_task (C bodies) --------


def test_get_debug_returns_what_set_debug_stored(loop: asyncio.AbstractEventLoop) -> None:
    initial = loop.get_debug()   # True under PYTHONASYNCIODEBUG=1
    assert initial in (True, False)
    loop.set_debug(1)   # stored as given, as stock does
    assert loop.get_debug() == 1 and type(loop.get_debug()) is int
    loop.set_debug(False)
    assert loop.get_debug() is False
    loop.set_debug(initial)


def test_is_running_inside_and_outside(loop: asyncio.AbstractEventLoop) -> None:
    async def inside() -> bool:
        return asyncio.get_running_loop().is_running()
    assert loop.is_running() is False
    assert loop.run_until_complete(inside()) is True
    assert loop.is_running() is False


def test_time_reads_base_events_clock(loop: asyncio.AbstractEventLoop,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Stock's body is ``return time.monotonic()`` in asyncio.base_events.
    class Clock:
        @staticmethod
        def monotonic() -> float:
            return 42.5
    t0 = loop.time()
    assert isinstance(t0, float) and t0 > 0
    monkeypatch.setattr(asyncio.base_events, "time", Clock)
    assert loop.time() == 42.5


@pytest.mark.parametrize("where", ["base_events.time", "time.monotonic"])
def test_patched_clock_drives_the_timers(loop: asyncio.AbstractEventLoop,
                                         monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # What freezegun-style clocks do: stock's _run_once reads self.time(), so
    # a timer fires when the patched clock passes its deadline.
    import time as time_module
    now = [time_module.monotonic()]
    fake = lambda: now[0]  # noqa: E731

    class Clock:
        monotonic = staticmethod(fake)
    if where == "base_events.time":
        monkeypatch.setattr(asyncio.base_events, "time", Clock)
    else:
        monkeypatch.setattr(time_module, "monotonic", fake)
    fired: list[str] = []
    loop.call_later(1000, fired.append, "far")
    _run_briefly(loop)
    assert fired == []
    now[0] += 2000
    _run_briefly(loop)
    assert fired == ["far"]


def test_create_future_and_patched_future_class(loop: asyncio.AbstractEventLoop,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fut = loop.create_future()
    assert type(fut) is asyncio.Future and fut.get_loop() is loop
    fut.cancel()

    class MyFuture(asyncio.Future):   # type: ignore[type-arg]
        pass
    monkeypatch.setattr(asyncio.futures, "Future", MyFuture)
    fut = loop.create_future()
    assert type(fut) is MyFuture and fut.get_loop() is loop
    fut.cancel()


def test_debug_future_source_traceback_ends_as_stock(loop: asyncio.AbstractEventLoop,
                                                     stock: asyncio.AbstractEventLoop) -> None:
    # In debug mode a future remembers where it was created: for
    # loop.create_future() that is stock's create_future, on both loops.
    frames = []
    for lp in (loop, stock):
        lp.set_debug(True)
        fut = lp.create_future()
        frames.append((fut._source_traceback[-1].filename.rsplit("/", 1)[-1],
                       fut._source_traceback[-1].name))
        fut.cancel()
    assert frames[0] == frames[1] == ("base_events.py", "create_future")


async def _answer(value: Any = 42) -> Any:
    return value


def test_create_task_name_and_context(loop: asyncio.AbstractEventLoop) -> None:
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def read_var() -> str:
        return var.get()
    t1 = loop.create_task(_answer(), name="first")
    t2 = loop.create_task(read_var(), context=ctx)
    t3 = loop.create_task(read_var(), name="third", context=ctx)
    assert type(t1) is asyncio.Task and t1.get_loop() is loop
    assert t1.get_name() == "first" and t3.get_name() == "third"
    assert t2.get_name().startswith("Task-")
    results = loop.run_until_complete(asyncio.gather(t1, t2, t3))
    assert results == [42, "task-ctx", "task-ctx"]


@pytest.mark.parametrize("with_context", [False, True])
def test_create_task_uses_the_task_factory(loop: asyncio.AbstractEventLoop,
                                           with_context: bool) -> None:
    made: list[dict[str, Any]] = []

    def factory(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append(kw)
        return asyncio.Task(coro, loop=lp, **kw)
    loop.set_task_factory(factory)
    kw = {"context": contextvars.copy_context()} if with_context else {}
    t = loop.create_task(_answer(7), name="named", **kw)
    assert loop.run_until_complete(t) == 7
    assert t.get_name() == "named"
    assert [sorted(k) for k in made] == [["context"] if with_context else []]


def test_create_task_honours_patched_task_class(loop: asyncio.AbstractEventLoop,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    class MyTask(asyncio.tasks._PyTask):   # type: ignore[name-defined, misc]
        pass
    monkeypatch.setattr(asyncio.tasks, "Task", MyTask)
    t = loop.create_task(_answer())
    assert type(t) is MyTask
    assert loop.run_until_complete(t) == 42


@pytest.mark.parametrize("call", ["no_args", "two_positional", "bogus_keyword", "not_a_coroutine",
                                  "future", "closed"])
def test_create_task_errors_read_as_stock(loop_factory: LoopFactory, call: str) -> None:
    def attempt(lp: asyncio.AbstractEventLoop) -> tuple[str, str]:
        coro = _answer()
        try:
            with pytest.raises((TypeError, RuntimeError)) as info:
                if call == "no_args":
                    lp.create_task()  # type: ignore[call-arg]
                elif call == "two_positional":
                    lp.create_task(coro, "x")  # type: ignore[call-arg]
                elif call == "bogus_keyword":
                    lp.create_task(coro, bogus=1)  # type: ignore[call-arg]
                elif call == "not_a_coroutine":
                    lp.create_task(42)  # type: ignore[arg-type]
                elif call == "future":
                    lp.create_task(lp.create_future())  # type: ignore[arg-type]
                else:
                    lp.close()
                    lp.create_task(coro)
            return type(info.value).__name__, str(info.value)
        finally:
            coro.close()
    ours, stock = loop_factory(), asyncio.SelectorEventLoop()
    try:
        assert attempt(ours) == attempt(stock)
    finally:
        ours.close()
        stock.close()


def test_transport_is_closing(loop: asyncio.AbstractEventLoop) -> None:
    a, b = socket.socketpair()

    async def main() -> list[bool]:
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        seen = [tr.is_closing()]
        tr.close()
        seen.append(tr.is_closing())
        await asyncio.sleep(0)
        seen.append(tr.is_closing())
        return seen
    try:
        assert loop.run_until_complete(main()) == [False, True, True]
    finally:
        b.close()


# -- call_at / call_later and the timer heap (C) ---------------------------------


def test_timer_heap_matches_stock(loop: asyncio.AbstractEventLoop,
                                  stock: asyncio.AbstractEventLoop) -> None:
    # The same deadlines on both loops (a fixed clock), many of them equal:
    # the heap after pushes, cancellations and pops is the one stock builds.
    layouts = []
    for lp in (loop, stock):
        lp.time = lambda: 1000.0  # type: ignore[method-assign]
        layouts.append(_timer_heap_script(lp))
        del lp.time  # type: ignore[method-assign]
    assert layouts[0] == layouts[1]


def _timer_heap_script(lp: asyncio.AbstractEventLoop) -> list[Any]:
    t0 = lp.time()
    handles = []
    for i in range(240):
        offset = (i * 7919 % 11) * 0.002
        if i % 2:
            handles.append(lp.call_at(t0 + offset, print, i))
        else:
            handles.append(lp.call_later(offset, print, i))
    for h in handles[::9]:
        h.cancel()
    # the heap after popping a third of it, through the loop's own pops
    for _ in range(80):
        h = lp._scheduled[0]  # type: ignore[attr-defined]
        h.cancel()
        lp.run_until_complete(asyncio.sleep(0))
    return [(h._when, h._args, h._cancelled) for h in lp._scheduled]  # type: ignore[attr-defined]


def test_timers_fire_in_deadline_then_insertion_order(loop: asyncio.AbstractEventLoop,
                                                      stock: asyncio.AbstractEventLoop) -> None:
    runs = []
    for lp in (loop, stock):
        ran: list[int] = []
        t0 = lp.time()
        for i in range(120):
            lp.call_at(t0 + (i * 31 % 7) * 0.003, ran.append, i)
        lp.call_at(t0 + 0.1, lp.stop)
        lp.run_forever()
        runs.append(ran)
    assert runs[0] == runs[1] and len(runs[0]) == 120


def test_call_later_uses_a_subclass_call_at(loop_factory: LoopFactory) -> None:
    probe = loop_factory()
    base = type(probe)
    probe.close()
    seen: list[float] = []

    class Recording(base):  # type: ignore[valid-type, misc]
        def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
            seen.append(when)
            return super().call_at(when, callback, *args, context=context)

    lp = Recording()
    try:
        before = lp.time()
        h = lp.call_later(5, print, "x")
        assert len(seen) == 1 and before + 5 <= seen[0] <= lp.time() + 5
        assert h.when() == seen[0]
        h.cancel()
    finally:
        lp.close()


def test_timer_context_and_cancel_count(loop: asyncio.AbstractEventLoop) -> None:
    ctx = contextvars.copy_context()
    ctx.run(var.set, "timer-ctx")
    got: list[str] = []
    h1 = loop.call_later(0, lambda: got.append(var.get()), context=ctx)
    h2 = loop.call_at(loop.time() + 100, print)
    assert isinstance(h1, asyncio.TimerHandle) and type(h2) is asyncio.TimerHandle
    assert h2._scheduled is True  # type: ignore[attr-defined]
    count = loop._timer_cancelled_count  # type: ignore[attr-defined]
    h2.cancel()
    assert loop._timer_cancelled_count == count + 1  # type: ignore[attr-defined]
    _run_briefly(loop)
    assert got == ["timer-ctx"] and h1.when() <= loop.time()


@pytest.mark.parametrize("call", ["at_none", "later_none", "at_str", "later_str", "bogus_kw",
                                  "no_callback", "closed"])
def test_timer_errors_read_as_stock(loop_factory: LoopFactory, call: str) -> None:
    def attempt(lp: asyncio.AbstractEventLoop) -> tuple[str, str]:
        with pytest.raises(Exception) as info:
            if call == "at_none":
                lp.call_at(None, print)  # type: ignore[arg-type]
                lp.run_until_complete(asyncio.sleep(0))
            elif call == "later_none":
                lp.call_later(None, print)  # type: ignore[arg-type]
                lp.run_until_complete(asyncio.sleep(0))
            elif call == "at_str":
                lp.call_at("soon", print)  # type: ignore[arg-type]
                lp.call_at(1.0, print)
            elif call == "later_str":
                lp.call_later("soon", print)  # type: ignore[arg-type]
            elif call == "bogus_kw":
                lp.call_later(1, print, bogus=1)  # type: ignore[call-arg]
            elif call == "no_callback":
                lp.call_at(1.0)  # type: ignore[call-arg]
            else:
                lp.close()
                lp.call_later(1, print)
        return type(info.value).__name__, str(info.value)
    ours, stock = loop_factory(), asyncio.SelectorEventLoop()
    try:
        assert attempt(ours) == attempt(stock)
    finally:
        ours.close()
        stock.close()


def test_loop_and_transport_instance_dicts_stay_specialisable() -> None:
    """The loop's and the stream transport's instance dicts stay as CPython
    specialises method calls through them (uringloop._loop._ALL_SLOTS_LOOP):
    on 3.13+ every attribute is a slot and the dict stays empty; before, the
    dict keeps under 30 keys (the class's shared keys).  Either way the dict
    is there for what an application stores on them."""
    transports: list[Any] = []

    def check(obj: Any) -> None:
        attrs = vars(obj)
        if sys.version_info >= (3, 13):
            assert attrs == {}, (type(obj), sorted(attrs))
        else:
            assert 0 < len(attrs) < 30, (type(obj), sorted(attrs))
        obj.app_note = "kept"
        assert vars(obj)["app_note"] == "kept"

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transports.append(transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> None:
        lp = asyncio.get_running_loop()
        server = await lp.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        transports.append(writer.transport)
        for size in (1, 100_000):
            writer.write(b"x" * size)
            await writer.drain()
            assert await reader.readexactly(size) == b"x" * size
        await lp.run_in_executor(None, int)
        lp.call_later(0.001, int)
        await asyncio.sleep(0.01)
        for t in transports:
            check(t)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop = uringloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), GUARD))
    finally:
        loop.close()
    assert len(transports) == 2
    check(loop)


def test_applications_can_store_attributes_on_loop_and_transport(
        loop_factory: LoopFactory) -> None:
    """As on stock asyncio, an application may keep its own attributes on the
    running loop and on a stream transport (uringloop keeps their instance
    dicts for this, whatever it keeps in slots)."""
    seen: dict[str, Any] = {}

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.app_conn_id = 7
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            seen["conn_id"] = self.transport.app_conn_id
            self.transport.write(data)

    async def main() -> None:
        lp = asyncio.get_running_loop()
        lp.app_registry = {"name": "demo"}  # type: ignore[attr-defined]
        server = await lp.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.app_peer = "client"
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        seen["peer"] = writer.transport.app_peer
        seen["registry"] = lp.app_registry  # type: ignore[attr-defined]
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop = loop_factory()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), GUARD))
        assert seen == {"conn_id": 7, "peer": "client", "registry": {"name": "demo"}}
        assert vars(loop)["app_registry"] == {"name": "demo"}
    finally:
        loop.close()
