"""The receive side of datagram transports, on stock asyncio and both uringloop paths.

uringloop's ring-native UDP transport (``_datagram.py``) receives through one
multishot recvmsg with provided buffers; these tests pin what it must keep
of stock asyncio's recvfrom-on-readiness: pause_reading/resume_reading lose
and reorder nothing, a receive survives more datagrams than the loop has
buffers, an ICMP error does not end the receive, a protocol exception goes
to the loop's exception handler and reading goes on, extra info.  Loopback
only; no timing assertions (GUARD only turns a hang into a failure).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringloop
from uringloop import _datagram

GUARD = 30.0


def _ipv6_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6",
                 marks=pytest.mark.skipif(not _ipv6_ok(), reason="no ::1")),
]


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="ul-dr-") as d:
        yield d


class Rec(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.data: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.data.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def _endpoint(**kwargs: Any) -> tuple[Any, Rec]:
    tr, proto = await asyncio.get_running_loop().create_datagram_endpoint(Rec, **kwargs)
    return tr, proto


async def _get(q: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(GUARD):
        return await q.get()


async def _close(tr: Any, proto: Rec) -> None:
    tr.close()
    async with asyncio.timeout(GUARD):
        await proto.lost


def test_udp_transport_kind(run: Callable[..., Any], tmpdir_short: str) -> None:
    # The test ids do not lie: "uringloop" uses the ring-native transport for
    # UDP when the kernel can, "uringloop-nomultishot" never does, and Unix
    # datagram sockets always keep CPython's transport.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        tr, proto = await _endpoint(local_addr=("127.0.0.1", 0))
        utr, uproto = await _endpoint(local_addr=f"{tmpdir_short}/u", family=socket.AF_UNIX)
        if isinstance(loop, uringloop.Loop):
            ring = loop.features.recv_multishot and loop.features.buf_ring
            assert isinstance(tr, _datagram.UringDatagramTransport) == ring
            assert not isinstance(utr, _datagram.UringDatagramTransport)
        await _close(tr, proto)
        await _close(utr, uproto)

    run(main())


@pytest.mark.parametrize("host", HOSTS)
def test_extra_info(run: Callable[..., Any], host: str) -> None:
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=(host, 0))
        saddr = server.get_extra_info("sockname")
        client, cproto = await _endpoint(remote_addr=saddr[:2])
        assert server.get_extra_info("peername") is None
        assert client.get_extra_info("peername") == saddr
        sock = client.get_extra_info("socket")
        assert sock.getsockname() == client.get_extra_info("sockname")
        client.sendto(b"hi")
        data, addr = await _get(sproto.data)
        assert (data, addr) == (b"hi", client.get_extra_info("sockname"))
        await _close(client, cproto)
        await _close(server, sproto)

    run(main())


@pytest.mark.parametrize("host", HOSTS)
def test_pause_reading_loses_and_reorders_nothing(run: Callable[..., Any], host: str) -> None:
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=(host, 0))
        saddr = server.get_extra_info("sockname")
        client, cproto = await _endpoint(remote_addr=saddr[:2])
        assert server.is_reading()
        for i in range(5):
            client.sendto(b"a%d" % i)
        got = [(await _get(sproto.data))[0] for _ in range(5)]
        assert got == [b"a%d" % i for i in range(5)]
        for round_ in range(3):
            server.pause_reading()
            assert not server.is_reading()
            for i in range(20):
                client.sendto(b"%d-%d" % (round_, i))
            await asyncio.sleep(0)   # a few iterations: no reads while paused
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert sproto.data.empty()
            server.resume_reading()
            assert server.is_reading()
            got = [(await _get(sproto.data))[0] for _ in range(20)]
            assert got == [b"%d-%d" % (round_, i) for i in range(20)]
        # Pause and resume with nothing in between, then read on.
        server.pause_reading()
        server.resume_reading()
        client.sendto(b"last")
        assert (await _get(sproto.data))[0] == b"last"
        await _close(client, cproto)
        await _close(server, sproto)

    run(main())


def test_more_datagrams_than_buffers(run: Callable[..., Any]) -> None:
    # More datagrams queued at once, over several endpoints, than the ring's
    # datagram buffer group has buffers: a receive that runs out (ENOBUFS) is
    # re-armed, and nothing is lost or reordered.
    async def main() -> None:
        servers = [await _endpoint(local_addr=("127.0.0.1", 0)) for _ in range(6)]
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        n = 40
        try:
            for i in range(n):   # all queued before the loop runs again
                for server, _ in servers:
                    sender.sendto(i.to_bytes(2, "big"), server.get_extra_info("sockname"))
            for _, sproto in servers:
                got = [int.from_bytes((await _get(sproto.data))[0], "big") for _ in range(n)]
                assert got == list(range(n))
        finally:
            sender.close()
        for server, sproto in servers:
            await _close(server, sproto)

    run(main())


def test_pause_reading_inside_datagram_received(run: Callable[..., Any]) -> None:
    # The protocol pauses reading from datagram_received while more datagrams
    # are already waiting: none is delivered until resume_reading(), then all
    # are, in order.
    class Pauser(Rec):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            super().datagram_received(data, addr)
            if data == b"pause":
                self.transport.pause_reading()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server, sproto = await loop.create_datagram_endpoint(
            Pauser, local_addr=("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for round_ in range(3):
                sender.sendto(b"pause", server.get_extra_info("sockname"))
                for i in range(30):
                    sender.sendto(b"%d" % i, server.get_extra_info("sockname"))
                assert (await _get(sproto.data))[0] == b"pause"
                assert not server.is_reading()
                for _ in range(5):
                    await asyncio.sleep(0)
                assert sproto.data.empty()
                server.resume_reading()
                got = [(await _get(sproto.data))[0] for _ in range(30)]
                assert got == [b"%d" % i for i in range(30)]
        finally:
            sender.close()
        await _close(server, sproto)

    run(main())


@pytest.mark.parametrize("host", HOSTS)
def test_receive_goes_on_after_icmp_error(run: Callable[..., Any], host: str) -> None:
    # ECONNREFUSED reaches error_received; the receive is re-armed: a datagram
    # from the (now bound) peer still arrives.
    async def main() -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        client, cproto = await _endpoint(remote_addr=(host, port))
        client.sendto(b"anyone?")
        exc = await _get(cproto.errors)
        assert type(exc) is ConnectionRefusedError
        peer = socket.socket(family, socket.SOCK_DGRAM)
        try:
            peer.bind((host, port))
            peer.sendto(b"back", client.get_extra_info("sockname"))
            data, addr = await _get(cproto.data)
            assert data == b"back"
            assert addr == peer.getsockname()
        finally:
            peer.close()
        assert not client.is_closing()
        await _close(client, cproto)

    run(main())


def test_protocol_exception_goes_to_handler(run: Callable[..., Any]) -> None:
    # Stock: an exception from datagram_received leaves the reader callback and
    # the loop's exception handler reports it; the transport reads on.
    class Boom(Rec):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if data == b"boom":
                raise ZeroDivisionError("boom")
            super().datagram_received(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
        server, sproto = await loop.create_datagram_endpoint(
            Boom, local_addr=("127.0.0.1", 0))
        client, cproto = await _endpoint(remote_addr=server.get_extra_info("sockname"))
        client.sendto(b"boom")
        client.sendto(b"after")
        assert (await _get(sproto.data))[0] == b"after"
        assert len(seen) == 1
        assert type(seen[0]["exception"]) is ZeroDivisionError
        assert not server.is_closing()
        await _close(client, cproto)
        await _close(server, sproto)

    run(main())


def test_close_and_abort_with_datagrams_pending(run: Callable[..., Any]) -> None:
    # Datagrams arriving around close()/abort(): none is delivered after it,
    # connection_lost comes once, and (uringloop) nothing stays in flight.
    async def main() -> None:
        for how in ("close", "abort"):
            server, sproto = await _endpoint(local_addr=("127.0.0.1", 0))
            client, cproto = await _endpoint(
                remote_addr=server.get_extra_info("sockname"))
            for i in range(10):
                client.sendto(b"x")
            getattr(server, how)()
            for i in range(10):
                client.sendto(b"y")
            async with asyncio.timeout(GUARD):
                assert await sproto.lost is None
            assert sproto.data.empty()
            await _close(client, cproto)

    run(main())
