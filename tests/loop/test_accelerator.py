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
from collections.abc import Callable
from typing import Any

import pytest

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
                                                 call: str) -> None:
    stock = asyncio.SelectorEventLoop()
    try:
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
    finally:
        stock.close()


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
