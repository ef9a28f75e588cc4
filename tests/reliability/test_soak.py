"""Soak: a mixed workload in rounds on one loop, resources measured per round.

Each round: stream echo (start_server/open_connection), Protocol echo
(create_server/create_connection), sock_* (sock_connect/accept/sendall/recv),
UDP echo (create_datagram_endpoint), timers (call_at, firing order checked) and
subprocess spawns with pipes; every byte is checked.  After each round the
open fd count, RSS and tracemalloc's traced size are recorded.

Asserted: the fd count is back to its value before the first round after
every round; the loop has nothing in flight but its self-pipe read and no
provided buffer lent; tracemalloc and RSS growth after the warm-up round are
bounded (the soak additionally asserts the second half grows less than a
per-round allowance, i.e. the curve is flat, not a slow leak).

Default run: 3 short rounds (exercises the code).  ``--soak`` or
``URINGLOOP_SOAK=1``: rounds for ``URINGLOOP_SOAK_SECONDS`` (180) per loop,
with the per-round figures printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import time
import tracemalloc
from typing import Any

import pytest

from relutil import assert_quiet, fd_count, pattern, quiesce, rss_bytes

GUARD = 60.0
MiB = 1 << 20


class EchoProto(asyncio.Protocol):
    def connection_made(self, tr: Any) -> None:
        self.tr = tr

    def data_received(self, data: bytes) -> None:
        self.tr.write(data)


class CheckProto(asyncio.Protocol):
    def __init__(self, expect: bytes) -> None:
        self.expect = expect
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, tr: Any) -> None:
        tr.write(self.expect)

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= len(self.expect) and not self.done.done():
            self.done.set_result(bytes(self.got))

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(repr(exc)))


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, tr: Any) -> None:
        self.tr = tr

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tr.sendto(data, addr)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.q: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.q.put_nowait(data)


async def one_round(r: int, scale: int) -> int:
    """One round of the mixed workload; returns the bytes checked."""
    loop = asyncio.get_running_loop()
    checked = 0

    # streams
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def stream_client(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        for k in range(4):
            msg = pattern(r * 7919 + i * 31 + k, 1 + (i * 4099 + k * 65537) % 150_000)
            writer.write(msg)
            assert await reader.readexactly(len(msg)) == msg
            n += len(msg)
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        return n

    checked += sum(await asyncio.wait_for(
        asyncio.gather(*(stream_client(i) for i in range(5 * scale))), GUARD))
    server.close()
    await server.wait_closed()

    # protocols
    pserver = await loop.create_server(EchoProto, "127.0.0.1", 0)
    pport = pserver.sockets[0].getsockname()[1]

    async def proto_client(i: int) -> int:
        msg = pattern(r + i, 100 + (i * 7777) % 80_000)
        tr, pr = await loop.create_connection(lambda: CheckProto(msg), "127.0.0.1", pport)
        assert await pr.done == msg
        tr.close()
        return len(msg)

    checked += sum(await asyncio.wait_for(
        asyncio.gather(*(proto_client(i) for i in range(5 * scale))), GUARD))
    pserver.close()
    await pserver.wait_closed()

    # sock_*
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    try:
        for i in range(2 * scale):
            c = socket.socket()
            c.setblocking(False)
            try:
                accept = loop.create_task(loop.sock_accept(lsock))
                await loop.sock_connect(c, lsock.getsockname())
                s, _ = await accept
                with s:
                    msg = pattern(i, 50_000)
                    await loop.sock_sendall(c, msg)
                    got = bytearray()
                    while len(got) < len(msg):
                        got += await loop.sock_recv(s, 65536)
                    assert got == msg
                    checked += len(msg)
            finally:
                c.close()
    finally:
        lsock.close()

    # UDP
    utr, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    ctr, cpr = await loop.create_datagram_endpoint(
        UdpClient, remote_addr=utr.get_extra_info("sockname"))
    try:
        for i in range(10 * scale):
            msg = pattern(i + r, 1 + (i * 997) % 9000)
            ctr.sendto(msg)
            assert await asyncio.wait_for(cpr.q.get(), GUARD) == msg
            checked += len(msg)
    finally:
        ctr.close()
        utr.close()

    # timers
    fired: list[int] = []
    done = loop.create_future()
    n_timers = 20 * scale
    base = loop.time()
    for i in range(n_timers):
        def cb(i: int = i) -> None:
            fired.append(i)
            if len(fired) == n_timers:
                done.set_result(None)
        loop.call_at(base + (n_timers - i) * 0.0002, cb)
    await asyncio.wait_for(done, GUARD)
    assert fired == list(reversed(range(n_timers)))

    # subprocesses
    for i in range(max(1, scale // 2)):
        msg = pattern(i, 30_000)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(msg), GUARD)
        assert proc.returncode == 0 and out == msg
        checked += len(out)

    await quiesce(loop)
    return checked


async def soak_main(rounds: int | None, seconds: float, scale: int) -> list[dict[str, int]]:
    loop = asyncio.get_running_loop()
    figures: list[dict[str, int]] = []
    await quiesce(loop)
    gc.collect()
    fd0 = fd_count()
    start = time.monotonic()
    r = 0
    while (rounds is not None and r < rounds) or (rounds is None and
                                                  time.monotonic() - start < seconds):
        checked = await one_round(r, scale)
        await quiesce(loop)
        gc.collect()
        assert_quiet(loop)
        fig = {"round": r, "fds": fd_count(), "rss": rss_bytes(),
               "traced": tracemalloc.get_traced_memory()[0], "bytes": checked}
        figures.append(fig)
        assert fig["fds"] == fd0, (fd0, fig)
        r += 1
    return figures


def _check_flat(figures: list[dict[str, int]], long_run: bool) -> None:
    base = figures[0]
    last = figures[-1]
    # After the warm-up round (caches, provided-buffer pages touched, ...).
    assert last["traced"] - base["traced"] < 2 * MiB, figures
    assert last["rss"] - base["rss"] < 48 * MiB, figures
    if long_run and len(figures) >= 6:
        mid = figures[len(figures) // 2]
        n = len(figures) - len(figures) // 2
        # Second half: less than 16 KiB of Python objects per round on average.
        assert last["traced"] - mid["traced"] < 16 * 1024 * n + 256 * 1024, figures
        assert last["rss"] - mid["rss"] < 64 * 1024 * n + 8 * MiB, figures


@pytest.mark.timeout(int(float(os.environ.get("URINGLOOP_SOAK_SECONDS", "180"))) + 300)
def test_soak(run: Any, soak: bool) -> None:
    seconds = float(os.environ.get("URINGLOOP_SOAK_SECONDS", "180"))
    tracemalloc.start()
    try:
        if soak:
            figures = run(soak_main(None, seconds, 10), debug=False)
        else:
            figures = run(soak_main(3, 0, 2), debug=False)
    finally:
        tracemalloc.stop()
    if soak:
        for f in figures:
            print(f"soak round {f['round']:3d}: fds {f['fds']} rss {f['rss'] / MiB:.1f} MiB "
                  f"traced {f['traced'] / 1024:.0f} KiB checked {f['bytes']} bytes")
    _check_flat(figures, soak)
