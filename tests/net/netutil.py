"""Helpers shared by the network behaviour tests (tests/net).

Every test here runs once on stock asyncio (the oracle) and once on
uringloop; helpers never branch on the loop except through is_uringloop(),
and only where a divergence is marked.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import uringloop


def is_uringloop(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    loop = loop or asyncio.get_running_loop()
    return isinstance(loop, uringloop.Loop)


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def pattern(n: int, seed: int = 0) -> bytes:
    """n deterministic bytes that make reordering and loss visible."""
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest() * 2048   # 64 KiB
    counter = b"".join(i.to_bytes(4, "little") for i in range(16384))   # 64 KiB
    unit = bytes(a ^ b for a, b in zip(block, counter))
    reps, rest = divmod(n, len(unit))
    return unit * reps + unit[:rest]


def nonblocking_pair(family: int = socket.AF_UNIX) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(family)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected non-blocking loopback TCP pair made with sock_* calls."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            accept = asyncio.ensure_future(loop.sock_accept(lsock))
            await loop.sock_connect(client, lsock.getsockname())
            server, _ = await accept
        except BaseException:
            client.close()
            raise
    return client, server


def set_linger0(sock: Any) -> None:
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


class RecordingProtocol(asyncio.Protocol):
    """Records every callback in order; futures for the interesting moments."""

    def __init__(self, eof_keep_open: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.events: list[Any] = []
        self.data = bytearray()
        self.transport: Any = None
        self.eof_keep_open = eof_keep_open
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.lost_calls: list[BaseException | None] = []
        self.closed_called = False      # set by the test when it calls close()
        self.after_close: list[str] = []
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        assert isinstance(data, bytes), type(data)
        assert data, "data_received() with no data"
        assert not self.lost_calls, "data after connection_lost"
        if self.closed_called:
            self.after_close.append("data_received")
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self._wake()

    def eof_received(self) -> bool:
        assert not self.lost_calls, "eof after connection_lost"
        if self.closed_called:
            self.after_close.append("eof_received")
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_keep_open

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("lost before enough data"))

    def _wake(self) -> None:
        for n, fut in self.waiters:
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    async def wait_bytes(self, n: int) -> None:
        if len(self.data) >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((n, fut))
        await fut


async def read_all_sock(sock: socket.socket, n: int | None = None) -> bytes:
    """sock_recv until EOF (or n bytes)."""
    loop = asyncio.get_running_loop()
    chunks = bytearray()
    while n is None or len(chunks) < n:
        data = await loop.sock_recv(sock, 65536 if n is None else min(65536, n - len(chunks)))
        if not data:
            break
        chunks += data
    return bytes(chunks)


async def assert_no_ops_in_flight(allowed: int = 0) -> None:
    """uringloop only: once cancellations have landed (a bounded number of loop
    iterations), nothing but the loop's own self-pipe read is in flight."""
    loop = asyncio.get_running_loop()
    if not is_uringloop(loop):
        return
    for _ in range(100):
        if loop.statistics().ops_in_flight <= 1 + allowed:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0)
    raise AssertionError(f"ops still in flight: {loop.statistics()}")  # type: ignore
