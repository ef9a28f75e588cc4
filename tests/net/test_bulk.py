"""Volume: 64 MiB each way checked by hash, 1000 concurrent echo connections."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
from typing import Any, Iterator

import pytest
from netutil import pattern

pytestmark = pytest.mark.timeout(120)

SIZE = 64 * 1024 * 1024


class HashingProtocol(asyncio.Protocol):
    """Sends `outgoing` at connection_made (honouring flow control), hashes what it gets."""

    def __init__(self, outgoing: bytes, expected: int) -> None:
        loop = asyncio.get_running_loop()
        self.outgoing = outgoing
        self.expected = expected
        self.hash = hashlib.sha256()
        self.count = 0
        self.transport: Any = None
        self.done = loop.create_future()
        self.lost = loop.create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.pauses = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        view = memoryview(self.outgoing)
        step = 1 << 20
        for i in range(0, len(view), step):
            await self.can_write.wait()
            self.transport.write(view[i:i + step])
        self.transport.write_eof()

    def pause_writing(self) -> None:
        self.pauses += 1
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self) -> bool:
        self.done.set_result(None)
        return True      # keep our write side open until our own data is out

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


@pytest.fixture(scope="module")
def payloads() -> Iterator[tuple[bytes, bytes]]:
    yield pattern(SIZE, seed=100), pattern(SIZE, seed=101)


@pytest.mark.asyncio
async def test_64mib_both_ways_protocol(payloads: tuple[bytes, bytes]) -> None:
    loop = asyncio.get_running_loop()
    up, down = payloads
    server_side: list[HashingProtocol] = []

    def server_factory() -> HashingProtocol:
        p = HashingProtocol(down, SIZE)
        server_side.append(p)
        return p

    server = await loop.create_server(server_factory, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ct, cp = await loop.create_connection(lambda: HashingProtocol(up, SIZE),
                                              "127.0.0.1", port)
        while not server_side:
            await asyncio.sleep(0)
        sp = server_side[0]
        await asyncio.gather(cp.done, sp.done)
        assert (cp.count, sp.count) == (SIZE, SIZE)
        assert cp.hash.digest() == hashlib.sha256(down).digest()
        assert sp.hash.digest() == hashlib.sha256(up).digest()
        ct.close()
        sp.transport.close()
        assert await cp.lost is None
        assert await sp.lost is None
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_64mib_both_ways_streams(payloads: tuple[bytes, bytes]) -> None:
    up, down = payloads

    async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), 1 << 20):
            writer.write(view[i:i + (1 << 20)])
            await writer.drain()
        writer.write_eof()

    async def receive(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        h = hashlib.sha256()
        n = 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return n, h.digest()

    results: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, server_got = await asyncio.gather(send(writer, down), receive(reader))
        writer.close()
        await writer.wait_closed()
        # Set last: the test must not end while this task still runs (3.11's
        # start_server done-callback raises CancelledError for a cancelled task).
        results["server"] = server_got

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        _, client = await asyncio.gather(send(writer, up), receive(reader))
        writer.close()
        await writer.wait_closed()
        while "server" not in results:
            await asyncio.sleep(0)
        assert client == (SIZE, hashlib.sha256(down).digest())
        assert results["server"] == (SIZE, hashlib.sha256(up).digest())
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.asyncio
async def test_1000_concurrent_echo_connections(enough_fds: None) -> None:
    n = 1000
    served = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        served += 1
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=n)
    port = server.sockets[0].getsockname()[1]
    connected = asyncio.Event()
    opened = 0

    async def client(i: int) -> bytes:
        nonlocal opened
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            opened += 1
            if opened == n:
                connected.set()
            await connected.wait()          # all n connections are open at once
            got = b""
            for k in range(3):
                msg = b"client %d message %d " % (i, k) + b"x" * (i % 200) + b"\n"
                writer.write(msg)
                await writer.drain()
                got += await reader.readline()
            writer.write_eof()
            assert await reader.read() == b""
            return got
        finally:
            writer.close()
            await writer.wait_closed()

    try:
        results = await asyncio.gather(*(client(i) for i in range(n)))
        for i, got in enumerate(results):
            assert got == b"".join(b"client %d message %d " % (i, k) + b"x" * (i % 200) + b"\n"
                                   for k in range(3))
        while served < n:
            await asyncio.sleep(0)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_many_connections_receiving_at_once(enough_fds: None) -> None:
    """Hundreds of connections become readable in the same iteration, each with
    more than one receive buffer's worth of bytes (on uringloop, together more
    than the provided-buffer ring holds): nothing is lost or mixed up."""
    import socket
    loop = asyncio.get_running_loop()
    n, size = 600, 40_000
    totals: dict[int, int] = {}
    hashes: dict[int, Any] = {}
    lost: list[BaseException | None] = []
    done = loop.create_future()

    class Counter(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.key = transport.get_extra_info("peername")[1]
            totals[self.key] = 0
            hashes[self.key] = hashlib.sha256()

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)

        def data_received(self, data: bytes) -> None:
            totals[self.key] += len(data)
            hashes[self.key].update(data)
            if len(totals) == n and all(v == size for v in totals.values()) \
                    and not done.done():
                done.set_result(None)

    server = await loop.create_server(Counter, "127.0.0.1", 0, backlog=n)
    port = server.sockets[0].getsockname()[1]
    clients: list[socket.socket] = []
    try:
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            clients.append(c)
            await loop.sock_connect(c, ("127.0.0.1", port))
        while len(totals) < n:
            await asyncio.sleep(0)
        payload = {c.getsockname()[1]: os.urandom(size) for c in clients}
        for c in clients:                     # all sent before the loop looks again
            assert c.send(payload[c.getsockname()[1]]) == size
        await done
        assert len(lost) == 0
        for port_, h in hashes.items():
            assert h.digest() == hashlib.sha256(payload[port_]).digest()
    finally:
        for c in clients:
            c.close()
        for _ in range(10_000):
            if len(lost) == len(totals):
                break
            await asyncio.sleep(0)
        server.close()
        await server.wait_closed()
