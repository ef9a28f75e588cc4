"""Memory and fd hygiene: close-on-exec everywhere, no ring fd in children,
no stale bytes from recycled provided buffers.

(The C core's own memory safety is checked by .ci/asan, which runs tests/c
under AddressSanitizer/UBSan.)
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

import uringloop
from relutil import open_fds, pattern, quiesce

GUARD = 30.0

LIST_FDS = (
    "import json, os\n"
    "fds = {}\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try:\n"
    "        fds[fd] = os.readlink('/proc/self/fd/' + fd)\n"
    "    except OSError:\n"
    "        pass\n"
    "print(json.dumps(fds))\n"
)


def _describe(fds: set[int]) -> dict[int, tuple[str, bool]]:
    out = {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        except OSError:
            continue
        out[fd] = (target, cloexec)
    return out


def test_every_loop_fd_is_cloexec_and_none_reaches_a_child(run: Any) -> None:
    """With a server, an accepted connection, a client, a UDP endpoint, a unix
    server and a running child (its pidfd) all open, every fd this process
    gained is close-on-exec; a child spawned with close_fds=False (so only
    FD_CLOEXEC keeps fds out) by subprocess.Popen and by the loop's own
    subprocess_exec sees none of them, in particular no io_uring fd."""
    before = open_fds()

    async def main() -> tuple[dict[int, tuple[str, bool]], list[dict[str, str]], bool]:
        loop = asyncio.get_running_loop()
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                     local_addr=("127.0.0.1", 0))
        sleeper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read()",
            stdin=asyncio.subprocess.PIPE)
        l, r = socket.socketpair()
        l.setblocking(False)
        pending = loop.create_task(loop.sock_recv(l, 1))
        await asyncio.sleep(0.05)   # the accept has completed by now
        described = _describe(open_fds() - before)
        listings = []
        out = await loop.run_in_executor(None, lambda: subprocess.run(
            [sys.executable, "-c", LIST_FDS], close_fds=False, capture_output=True,
            check=True).stdout)
        listings.append(json.loads(out))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LIST_FDS, close_fds=False, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), GUARD)
        listings.append(json.loads(out))
        r.send(b"x")
        assert await pending == b"x"
        l.close()
        r.close()
        sleeper.stdin.close()   # type: ignore[union-attr]
        await asyncio.wait_for(sleeper.wait(), GUARD)
        udp.close()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await quiesce(loop)
        return described, listings, isinstance(loop, uringloop.Loop)

    described, listings, is_uring = run(main())
    not_cloexec = {fd: t for fd, (t, ce) in described.items() if not ce}
    assert not_cloexec == {}
    targets = [t for t, _ in described.values()]
    assert any("socket:" in t for t in targets)
    if is_uring:
        assert any("io_uring" in t for t in targets), targets
    for listing in listings:
        # The child may inherit fds the test runner left inheritable (pytest's
        # capture files); none of those the loop opened.
        leaked = set(listing.values()) & set(targets)
        assert leaked == set(), (leaked, listing)
        assert not any("io_uring" in t for t in listing.values()), listing


def test_ring_fd_is_cloexec() -> None:
    loop = uringloop.Loop()
    try:
        rings = {fd: t for fd, (t, _) in _describe(open_fds()).items() if "io_uring" in t}
        assert rings, "no io_uring fd found"
        for fd in rings:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, (fd, rings[fd])
    finally:
        loop.close()


class Chunks(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.expect = 0

    def connection_made(self, tr: Any) -> None:
        self.tr = tr

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.waiter and not self.waiter.done() and \
                sum(map(len, self.chunks)) >= self.expect:
            self.waiter.set_result(None)

    async def take(self, n: int) -> bytes:
        self.expect = n
        if sum(map(len, self.chunks)) < n:
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, GUARD)
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class BufChunks(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(b"\xee" * 200_000)
        self.got = bytearray()
        self.sizes: list[int] = []
        self.waiter: asyncio.Future[None] | None = None
        self.expect = 0

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buf[:nbytes]
        self.buf[:nbytes] = b"\xee" * nbytes   # poison: stale bytes would show
        if self.waiter and not self.waiter.done() and len(self.got) >= self.expect:
            self.waiter.set_result(None)

    async def take(self, n: int) -> bytes:
        self.expect = n
        if len(self.got) < n:
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, GUARD)
        data = bytes(self.got)
        self.got.clear()
        return data


@pytest.mark.parametrize("proto", ["Protocol", "BufferedProtocol"])
def test_no_stale_bytes_from_recycled_buffers(run: Any, proto: str) -> None:
    """Long message, then short ones, on several connections in turn (so
    provided buffers are recycled between them): what is delivered is exactly
    what was sent, never the tail of an earlier, longer message."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pairs = []
        for _ in range(4):
            a, b = socket.socketpair()
            b.setblocking(False)
            factory = Chunks if proto == "Protocol" else BufChunks
            tr, pr = await loop.connect_accepted_socket(factory, a)
            pairs.append((tr, pr, b))
        for i in range(60):
            for k, (_tr, pr, b) in enumerate(pairs):
                long_msg = pattern(i * 4 + k, 60_000)
                await loop.sock_sendall(b, long_msg)
                assert await pr.take(len(long_msg)) == long_msg
                for short in (b"x", b"yz", pattern(i, 10), b"\0" * 3):
                    await loop.sock_sendall(b, short)
                    got = await pr.take(len(short))
                    assert got == short, (i, k, got[:20])
        for tr, _pr, b in pairs:
            tr.close()
            b.close()
        await quiesce(loop)

    run(main())


def test_no_stale_bytes_in_datagrams(run: Any) -> None:
    """A long datagram, then short ones, into the same endpoint: each short
    datagram is delivered exactly, with nothing of the long one."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes] = asyncio.Queue()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                q.put_nowait(data)

        tr, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(200):
                long_msg = pattern(i, 60_000)
                s.sendto(long_msg, addr)
                assert await asyncio.wait_for(q.get(), GUARD) == long_msg
                for short in (b"a", b"", pattern(i, 7)):
                    s.sendto(short, addr)
                    assert await asyncio.wait_for(q.get(), GUARD) == short
        finally:
            s.close()
            tr.close()
            await quiesce(loop)

    run(main())
