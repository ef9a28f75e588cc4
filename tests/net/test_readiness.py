"""add_reader/add_writer/remove_reader/remove_writer: asyncio's level-triggered
readiness callbacks (on uringloop: single-shot ring polls re-armed per callback)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

import pytest
from netutil import assert_no_ops_in_flight, nonblocking_pair

pytestmark = pytest.mark.timeout(60)


async def _spin(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_reader_is_level_triggered_until_removed() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        calls: list[int] = []
        loop.add_reader(a, calls.append, 1)
        await _spin(5)
        assert calls == []                       # nothing to read yet
        b.send(b"x")
        await _spin(20)
        assert len(calls) >= 2                   # still readable: fires again and again
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False
        n = len(calls)
        await _spin(10)
        assert len(calls) == n
        assert a.recv(10) == b"x"
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_reader_that_drains_fires_once_per_arrival() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    got: list[bytes] = []
    with a, b:
        loop.add_reader(a.fileno(), lambda: got.append(a.recv(100)))
        for i in range(5):
            b.send(b"msg%d" % i)
            for _ in range(50):
                if len(got) == i + 1:
                    break
                await asyncio.sleep(0)
            await _spin(3)
            assert got == [b"msg%d" % k for k in range(i + 1)]
        b.close()
        for _ in range(50):
            if got[-1] == b"":
                break
            await asyncio.sleep(0)
        assert got[-1] == b""                    # EOF makes it readable
        loop.remove_reader(a.fileno())
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_writer_fires_when_writable_and_reader_independent() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        events: list[str] = []
        loop.add_writer(a, events.append, "w")
        loop.add_reader(a, events.append, "r")
        await _spin(5)
        assert "w" in events and "r" not in events
        assert loop.remove_writer(a) is True
        events.clear()
        b.send(b"data")
        await _spin(10)
        assert "r" in events and "w" not in events
        assert loop.remove_reader(a) is True
        assert loop.remove_writer(a) is False
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_writer_waits_while_send_buffer_full() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair(socket.AF_UNIX)
    with a, b:
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass
        fired = asyncio.Event()
        loop.add_writer(a, fired.set)
        await _spin(10)
        assert not fired.is_set()
        try:
            while b.recv(1 << 20):                # the peer catches up
                pass
        except BlockingIOError:
            pass
        await asyncio.wait_for(fired.wait(), 10)
        loop.remove_writer(a)
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_replacing_a_reader_and_removing_from_callback() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        first: list[int] = []
        second: list[int] = []
        loop.add_reader(a, first.append, 1)
        loop.add_reader(a, second.append, 2)     # replaces the first
        b.send(b"x")
        await _spin(10)
        assert first == [] and second

        def once() -> None:
            second.clear()
            second.append(99)
            loop.remove_reader(a)                # from inside its own callback

        loop.add_reader(a, once)
        await _spin(10)
        assert second == [99]
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
@pytest.mark.allow_exception_handler
async def test_raising_callback_is_reported_and_stays_registered() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    a, b = nonblocking_pair()
    with a, b:
        calls = 0

        def cb() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ZeroDivisionError("boom")
            a.recv(100)
            loop.remove_reader(a)

        loop.add_reader(a, cb)
        b.send(b"x")
        await _spin(20)
        assert calls == 2
        assert [type(c["exception"]) for c in contexts] == [ZeroDivisionError]
        assert contexts[0]["message"].startswith("Exception in callback")
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_bad_file_objects() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError):
        loop.add_reader(-1, lambda: None)
    with pytest.raises(ValueError):
        loop.add_writer("not a file", lambda: None)
    with pytest.raises(ValueError):
        loop.remove_reader(object())
    assert loop.remove_reader(12345) is False
    assert loop.remove_writer(12345) is False


@pytest.mark.asyncio
async def test_many_readers() -> None:
    loop = asyncio.get_running_loop()
    pairs = [nonblocking_pair() for _ in range(200)]
    seen: set[int] = set()
    try:
        for i, (a, b) in enumerate(pairs):
            def cb(i: int = i, a: socket.socket = a) -> None:
                assert a.recv(10) == b"%d" % i
                seen.add(i)
                loop.remove_reader(a)
            loop.add_reader(a, cb)
        for i, (a, b) in enumerate(pairs):
            b.send(b"%d" % i)
        for _ in range(200):
            if len(seen) == len(pairs):
                break
            await asyncio.sleep(0)
        assert seen == set(range(len(pairs)))
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    await assert_no_ops_in_flight()


def _regular_file_fd() -> int:
    import tempfile
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    return fd


def _closed_fd() -> int:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    return fd


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["closed", "regular-file", "directory"])
@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
async def test_unpollable_fd_refused_as_stock(kind: str, method: str) -> None:
    """Stock asyncio's epoll refuses these at registration (EBADF, EPERM); a ring
    poll would not fail but report them ready forever."""
    loop = asyncio.get_running_loop()
    if kind == "closed":
        fd, expected, close = _closed_fd(), OSError, False
    elif kind == "regular-file":
        fd, expected, close = _regular_file_fd(), PermissionError, True
    else:
        fd, expected, close = os.open("/", os.O_RDONLY), PermissionError, True
    try:
        with pytest.raises(expected) as info:
            getattr(loop, method)(fd, lambda: None)
        assert info.value.errno == (errno.EBADF if kind == "closed" else errno.EPERM)
        assert loop.remove_reader(fd) is False and loop.remove_writer(fd) is False
    finally:
        if close:
            os.close(fd)
    await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_fd_closed_without_remove_reader_goes_quiet() -> None:
    """Closing a watched fd without remove_reader(): stock's epoll forgets it
    silently; the callback must not be called again (nor fail in a loop)."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = 0
    fd = a.fileno()

    def cb() -> None:
        nonlocal calls
        calls += 1
        a.recv(10)
        a.close()                             # no remove_reader()

    with b:
        loop.add_reader(fd, cb)
        b.send(b"x")
        await _spin(30)
        assert calls == 1
        await _spin(30)
        assert calls == 1
        loop.remove_reader(fd)
    await assert_no_ops_in_flight()
