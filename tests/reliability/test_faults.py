"""Faults forced deliberately; after each: no byte lost or reordered, no
exception reaching the handler that stock asyncio would not produce, no fd,
op or provided buffer leaked (the conftest teardown checks those for every
loop the ``run`` fixture makes; loops built here with odd ring sizes are
checked by ``run_small_ring``).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import sys
import threading
import warnings
from typing import Any, Callable

import pytest

import uringloop
from uringloop import _stream
from relutil import assert_quiet, open_fds, pattern, quiesce, raise_nofile

GUARD = 60.0


def is_uring(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    return isinstance(loop or asyncio.get_running_loop(), uringloop.Loop)


class Collect(asyncio.Protocol):
    """Receives everything; optionally pauses reading now and then (slow consumer)."""

    def __init__(self, slow: bool) -> None:
        self.data = bytearray()
        self.slow = slow
        self.eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks += 1
        if self.slow and self.chunks % 2:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.001, self.transport.resume_reading)

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(None)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.eof.done():
            self.eof.set_exception(ConnectionError(f"lost: {exc!r}"))


class SlowBuffered(asyncio.BufferedProtocol):
    """A BufferedProtocol whose get_buffer is slow and hands out tiny buffers."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.buf = bytearray(97)
        self.eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        for _ in range(200):   # slow: some pure-Python work per call
            pass
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(None)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.eof.done():
            self.eof.set_exception(ConnectionError(f"lost: {exc!r}"))


class ENOBUFSCounter:
    """Counts multishot receives the kernel ended with ENOBUFS (uringloop only)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        cls = _find_stream_class()
        orig = cls._on_recv

        def on_recv(tr: Any, res: int, flags: int) -> None:
            if res == -errno.ENOBUFS:
                self.count += 1
            orig(tr, res, flags)

        monkeypatch.setattr(cls, "_on_recv", on_recv)


def _find_stream_class() -> type:
    for obj in vars(_stream).values():
        if isinstance(obj, type) and "_on_recv" in vars(obj):
            return obj
    raise AssertionError("no stream transport class in uringloop._stream")


async def _many_receivers(npairs: int, rounds: int, chunk: int, buffered: bool,
                          slow: bool) -> tuple[int, int]:
    """npairs socketpairs, our end a transport; the peer ends are written from a
    plain callback, all at once, so one iteration finds data on every
    connection (more than the 512 provided buffers).  Returns (ok, total)."""
    loop = asyncio.get_running_loop()
    peers, protos, transports = [], [], []
    try:
        for i in range(npairs):
            a, b = socket.socketpair()
            peers.append(b)
            if buffered:
                tr, pr = await loop.connect_accepted_socket(SlowBuffered, a)
            else:
                tr, pr = await loop.connect_accepted_socket(lambda: Collect(slow), a)
            protos.append(pr)
            transports.append(tr)
        expected = [bytearray() for _ in range(npairs)]
        for r in range(rounds):
            for i, b in enumerate(peers):     # no loop iteration in between
                data = pattern(i * 1000 + r, chunk)
                b.sendall(data)
                expected[i] += data
            await asyncio.sleep(0)
        for b in peers:
            b.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(asyncio.gather(*(p.eof for p in protos)), GUARD)
        ok = sum(1 for p, e in zip(protos, expected) if p.data == e)
        return ok, npairs
    finally:
        for tr in transports:
            tr.close()
        for b in peers:
            b.close()
        await quiesce(loop)


NPAIRS = 1200


@pytest.mark.parametrize("consumer", ["paused", "buffered-slow-get_buffer"])
def test_provided_buffer_exhaustion(run: Any, consumer: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    old = raise_nofile(2 * NPAIRS + 200)
    counter = ENOBUFSCounter(monkeypatch)
    try:
        async def main() -> tuple[int, int, int]:
            ok, total = await _many_receivers(NPAIRS, 4, 3000, consumer != "paused",
                                              consumer == "paused")
            assert_quiet(asyncio.get_running_loop())
            return ok, total, counter.count

        ok, total, _ = run(main(), debug=False)
        assert ok == total
    finally:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    return None


def run_small_ring(coro_fn: Callable[[], Any], **ring: Any) -> tuple[Any, Any]:
    """Run coro_fn() on a uringloop.Loop(**ring); return (result, statistics)."""
    seen: list[dict[str, Any]] = []
    loop = uringloop.Loop(**ring)
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    runner = asyncio.Runner(loop_factory=lambda: loop)
    try:
        with runner:
            result = runner.run(coro_fn())
            stats = loop.statistics()
    finally:
        if not loop.is_closed():
            loop.close()
    assert seen == []
    closed = loop.statistics()
    assert closed.ops_in_flight == 0 and closed.buffers_lent == 0
    return result, stats


@pytest.mark.parametrize("consumer", ["paused", "buffered-slow-get_buffer"])
def test_enobufs_was_forced(consumer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exhaustion really happens: the kernel ends multishot receives with
    ENOBUFS, they are re-armed, nothing is lost.  Forced with COOP_TASKRUN:
    under DEFER_TASKRUN the kernel runs a bounded batch of task work per enter
    and the 512 buffers are handed back before they run out (the default-ring
    variant above checks that nothing is lost there)."""
    old = raise_nofile(2 * NPAIRS + 200)
    counter = ENOBUFSCounter(monkeypatch)
    try:
        (ok, total), _ = run_small_ring(
            lambda: _many_receivers(NPAIRS, 4, 3000, consumer != "paused",
                                    consumer == "paused"),
            disable=("defer_taskrun",))
    finally:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    assert ok == total
    assert counter.count > 0


@pytest.mark.parametrize("ring,counter", [
    ({"sq_entries": 8, "cq_entries": 16}, "cq_overflow_flushes"),
    ({"sq_entries": 4, "cq_entries": 8}, "sq_full_flushes"),
])
def test_tiny_rings(ring: dict[str, int], counter: str) -> None:
    """A tiny CQ overflows (the kernel parks CQEs on its overflow list, NODROP)
    and a tiny SQ fills up within one iteration (hundreds of receives armed, a
    thousand polls submitted at once); nothing is lost either way."""
    npairs = 600
    old = raise_nofile(2 * npairs + 200)

    async def main() -> tuple[int, int, int]:
        ok, total = await _many_receivers(npairs, 3, 2000, False, False)
        # Thousands of ops submitted in one iteration: sock_recv polls.
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            tasks = [loop.create_task(loop.sock_recv(a, 1)) for _ in range(1)]
            pairs = [socket.socketpair() for _ in range(300)]
            for x, _y in pairs:
                x.setblocking(False)
            waits = [loop.create_task(loop.sock_recv(x, 10)) for x, _ in pairs]
            await asyncio.sleep(0)
            for i, (_x, y) in enumerate(pairs):
                y.send(b"%d" % i)
            got = await asyncio.wait_for(asyncio.gather(*waits), GUARD)
            assert got == [b"%d" % i for i in range(len(pairs))]
            b.send(b"z")
            assert await asyncio.wait_for(tasks[0], GUARD) == b"z"
            for x, y in pairs:
                x.close()
                y.close()
        finally:
            a.close()
            b.close()
        return ok, total, len(pairs)

    try:
        (ok, total, _), stats = run_small_ring(main, **ring)
    finally:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    assert ok == total
    assert getattr(stats, counter) > 0, stats
