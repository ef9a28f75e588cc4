"""Cancelling sock_* calls at every await point loses nothing.

A receive cancelled while it waits must not have consumed bytes: they are
returned by the next receive.  An accept cancelled while it waits must not
have taken a connection: the next accept returns it.  A cancelled sendall
has sent a prefix of its data and nothing else.  Nothing stays in flight and
no fd leaks (the conftest teardown checks both).
"""

from __future__ import annotations

import asyncio
import random
import re
import select
import socket
from typing import Any

import pytest
from netutil import assert_no_ops_in_flight, is_uringloop, nonblocking_pair, pattern, tcp_pair

pytestmark = pytest.mark.timeout(60)


async def _spin(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


RECEIVERS = ["recv", "recv_into"]


async def _receive(loop: asyncio.AbstractEventLoop, how: str, sock: socket.socket) -> bytes:
    if how == "recv":
        return await loop.sock_recv(sock, 65536)
    buf = bytearray(65536)
    n = await loop.sock_recv_into(sock, buf)
    return bytes(buf[:n])


@pytest.mark.asyncio
@pytest.mark.parametrize("how", RECEIVERS)
async def test_cancelled_receive_loses_nothing(how: str) -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    with a, b:
        for i in range(3):
            task = asyncio.ensure_future(_receive(loop, how, b))
            await _spin(3)
            assert not task.done()
            await _cancelled(task)
            a.send(b"after-cancel-%d" % i)
            assert await _receive(loop, how, b) == b"after-cancel-%d" % i
        await assert_no_ops_in_flight()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", RECEIVERS)
async def test_receive_wait_for_timeout_loses_nothing(how: str) -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_receive(loop, how, b), 0.01)
        a.send(b"late")
        assert await asyncio.wait_for(_receive(loop, how, b), 10) == b"late"
        await assert_no_ops_in_flight()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["recvfrom", "recvfrom_into"])
async def test_cancelled_recvfrom_loses_no_datagram(how: str) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for s in (a, b):
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))

        async def receive() -> tuple[bytes, Any]:
            if how == "recvfrom":
                return await loop.sock_recvfrom(b, 100)
            buf = bytearray(100)
            n, addr = await loop.sock_recvfrom_into(b, buf)
            return bytes(buf[:n]), addr

        task = asyncio.ensure_future(receive())
        await _spin(3)
        await _cancelled(task)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(receive(), 0.01)
        a.sendto(b"d1", b.getsockname())
        a.sendto(b"d2", b.getsockname())
        assert await receive() == (b"d1", a.getsockname())
        assert await receive() == (b"d2", a.getsockname())
        await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_cancelled_accept_loses_no_connection() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.setblocking(False)
        task = asyncio.ensure_future(loop.sock_accept(lsock))
        await _spin(3)
        await _cancelled(task)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_accept(lsock), 0.01)
        clients = [socket.create_connection(lsock.getsockname()) for _ in range(2)]
        try:
            for c in clients:
                conn, addr = await asyncio.wait_for(loop.sock_accept(lsock), 10)
                with conn:
                    assert addr == c.getsockname()
        finally:
            for c in clients:
                c.close()
        await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_cancelled_sendall_sent_a_prefix() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    data = pattern(16 * 1024 * 1024, seed=3)   # far more than the socket buffers hold
    with a, b:
        task = asyncio.ensure_future(loop.sock_sendall(a, data))
        await _spin(5)
        assert not task.done()                  # the peer does not read: it waits
        await _cancelled(task)

        async def reader() -> bytearray:
            got = bytearray()
            while True:
                chunk = await loop.sock_recv(b, 1 << 20)
                if not chunk:
                    return got
                got += chunk

        read_task = asyncio.ensure_future(reader())
        await loop.sock_sendall(a, b"TAIL")
        a.shutdown(socket.SHUT_WR)
        got = await read_task
        assert got.endswith(b"TAIL")
        prefix = bytes(got[:-4])
        assert 0 < len(prefix) < len(data)
        assert prefix == data[:len(prefix)]
        await assert_no_ops_in_flight()


@pytest.mark.asyncio
async def test_sendall_wait_for_timeout() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    with a, b:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_sendall(a, b"x" * (32 * 1024 * 1024)), 0.05)
        await assert_no_ops_in_flight()
        # the socket still works both ways
        await loop.sock_sendall(b, b"back")
        assert await loop.sock_recv(a, 4) == b"back"


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: further connects stay pending."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(lsock.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
        _, writable, _ = select.select([], [c], [], 0.5)
        if not writable:          # this one is already pending: the queue is full
            break
    return lsock, fillers


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["cancel", "wait_for"])
async def test_cancelled_connect(how: str) -> None:
    loop = asyncio.get_running_loop()
    lsock, fillers = _full_listener()
    try:
        with socket.socket() as c:
            c.setblocking(False)
            if how == "cancel":
                task = asyncio.ensure_future(loop.sock_connect(c, lsock.getsockname()))
                await _spin(5)
                assert not task.done()
                await _cancelled(task)
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(loop.sock_connect(c, lsock.getsockname()), 0.05)
            await assert_no_ops_in_flight()
        # the loop still connects elsewhere
        a, b = await tcp_pair()
        a.close()
        b.close()
    finally:
        lsock.close()
        for f in fillers:
            f.close()


@pytest.mark.asyncio
async def test_random_cancel_points_receive() -> None:
    """Many receives cancelled at random points while a sender writes numbered chunks:
    the concatenation of everything received is exactly what was sent."""
    loop = asyncio.get_running_loop()
    rng = random.Random(1234)
    a, b = await tcp_pair()
    chunks = [b"<%05d:" % i + bytes([65 + i % 26]) * rng.randrange(1, 3000) + b">"
              for i in range(400)]
    sent = b"".join(chunks)
    with a, b:
        async def sender() -> None:
            for chunk in chunks:
                await loop.sock_sendall(a, chunk)
                await _spin(rng.randrange(0, 3))
            a.shutdown(socket.SHUT_WR)

        send_task = asyncio.ensure_future(sender())
        got = bytearray()
        lost_on_cancel = 0
        cancels = 0
        while True:
            how = rng.choice(RECEIVERS)
            task = asyncio.ensure_future(_receive(loop, how, b))
            await _spin(rng.randrange(0, 4))
            if rng.random() < 0.7 and task.cancel():
                cancels += 1
                try:
                    data = await task
                except asyncio.CancelledError:
                    continue
            else:
                data = await task
            if not data:
                break
            got += data
        await send_task
        await assert_no_ops_in_flight()
    assert cancels > 20
    if got != sent:
        # Stock asyncio reads the bytes in the reader callback and sets them as
        # the future's result; a cancel that lands before the task resumes
        # throws CancelledError into it and the bytes are gone.  uringloop
        # waits for readiness only and reads in the task itself.
        assert not is_uringloop(loop), "uringloop lost or reordered received bytes"
        lost_on_cancel = len(sent) - len(got)
        assert lost_on_cancel > 0
        pytest.xfail("stock asyncio: a cancelled sock_recv can lose the bytes it read "
                     f"({lost_on_cancel} bytes lost)")


@pytest.mark.asyncio
async def test_random_cancel_points_accept() -> None:
    """Accepts cancelled at random points while clients connect: every client
    is accepted exactly once (no connection taken by a cancelled accept)."""
    loop = asyncio.get_running_loop()
    if not is_uringloop(loop):
        # CPython's _sock_accept() does not check whether its future is already
        # done: a cancel that lands after the socket became readable makes the
        # reader callback accept anyway, set_result() raises InvalidStateError
        # (exception handler) and the accepted connection is dropped.
        pytest.skip("stock asyncio bug: a cancelled sock_accept can accept and drop "
                    "a connection (InvalidStateError in _sock_accept)")
    rng = random.Random(99)
    n_clients = 150
    with socket.create_server(("127.0.0.1", 0), backlog=n_clients) as lsock:
        lsock.setblocking(False)
        clients: list[socket.socket] = []
        accepted: list[socket.socket] = []

        async def connector() -> None:
            for _ in range(n_clients):
                c = socket.socket()
                c.setblocking(False)
                clients.append(c)
                await loop.sock_connect(c, lsock.getsockname())
                await _spin(rng.randrange(0, 3))

        try:
            conn_task = asyncio.ensure_future(connector())
            cancels = 0
            while len(accepted) < n_clients:
                task = asyncio.ensure_future(loop.sock_accept(lsock))
                await _spin(rng.randrange(0, 4))
                if rng.random() < 0.7 and task.cancel():
                    cancels += 1
                    try:
                        conn, _ = await task
                    except asyncio.CancelledError:
                        if conn_task.done() and not _readable(lsock):
                            break          # nothing more will come
                        continue
                else:
                    conn, _ = await task
                accepted.append(conn)
            await conn_task
            assert cancels > 20
            await assert_no_ops_in_flight()
            assert len(accepted) == n_clients
            peers = sorted(s.getpeername() for s in accepted)
            assert peers == sorted(c.getsockname() for c in clients)
        finally:
            for s in clients + accepted:
                s.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


@pytest.mark.asyncio
async def test_random_cancel_points_sendall() -> None:
    """sendall()s cancelled at random points while the peer reads slowly: the peer
    receives, in order, a prefix of every chunk and nothing else."""
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    a, b = await tcp_pair()
    sizes = [rng.randrange(1, 200_000) for _ in range(120)]
    fill = [bytes([1 + i % 251]) for i in range(len(sizes))]   # neighbours differ
    completed: set[int] = set()
    with a, b:
        async def reader() -> bytes:
            got = bytearray()
            while True:
                await _spin(rng.randrange(0, 3))
                chunk = await loop.sock_recv(b, rng.choice([1000, 65536, 1 << 20]))
                if not chunk:
                    return bytes(got)
                got += chunk

        read_task = asyncio.ensure_future(reader())
        cancels = 0
        for i, (size, byte) in enumerate(zip(sizes, fill)):
            task = asyncio.ensure_future(loop.sock_sendall(a, byte * size))
            await _spin(rng.randrange(0, 5))
            if rng.random() < 0.6 and task.cancel():
                cancels += 1
                try:
                    await task
                    completed.add(i)
                except asyncio.CancelledError:
                    pass
            else:
                await task
                completed.add(i)
        a.shutdown(socket.SHUT_WR)
        got = await read_task
        await assert_no_ops_in_flight()
    assert cancels > 10
    # Split into runs of equal bytes: each run is a prefix of one chunk, in order,
    # and a sendall() that completed contributed all of its chunk.
    runs: dict[int, int] = {}
    index = 0
    for match in re.finditer(rb"(.)\1*", got, re.S):
        while fill[index] != match.group(1):
            index += 1                          # chunks that sent nothing
        runs[index] = len(match.group(0))
        index += 1
    for i, size in enumerate(sizes):
        if i in completed:
            assert runs.get(i) == size, i
        else:
            assert runs.get(i, 0) <= size, i      # a prefix (a late cancel may find it all sent)


@pytest.mark.asyncio
async def test_random_cancel_points_connect() -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(5)
    with socket.create_server(("127.0.0.1", 0), backlog=200) as lsock:
        lsock.setblocking(False)
        accepted: list[socket.socket] = []

        async def acceptor() -> None:
            while True:
                conn, _ = await loop.sock_accept(lsock)
                accepted.append(conn)

        acc = asyncio.ensure_future(acceptor())
        connected = 0
        try:
            for _ in range(100):
                with socket.socket() as c:
                    c.setblocking(False)
                    task = asyncio.ensure_future(loop.sock_connect(c, lsock.getsockname()))
                    await _spin(rng.randrange(0, 3))
                    if task.cancel():
                        with pytest.raises(asyncio.CancelledError):
                            await task
                    else:
                        await task
                        connected += 1
                        await loop.sock_sendall(c, b"hi")
        finally:
            acc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await acc
            for s in accepted:
                s.close()
        assert len(accepted) >= connected
        await assert_no_ops_in_flight()
