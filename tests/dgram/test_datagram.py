"""Datagram endpoints and sock_* on datagram sockets, on uringloop and stock asyncio.

uringloop reuses CPython's ``_SelectorDatagramTransport``; its readiness
callbacks are single-shot polls on the ring (``_sockets.py``).  Every test
here runs on both loops and asserts what the stock loop does: UDP over IPv4
and IPv6 loopback and Unix datagram sockets, every create_datagram_endpoint
argument, the largest datagrams, ICMP errors, write flow control, closing
with work in flight and bad input.  Loopback only; no timing assertions
(GUARD only turns a hang into a failure).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringloop

GUARD = 30.0

# The largest payload of one datagram: IPv4 UDP 65535 - 20 (IP) - 8 (UDP);
# IPv6 UDP 65535 - 8 (the IPv6 payload length excludes its own header);
# Unix datagrams are bounded by the socket buffer only: 64 KiB here.
MAX_PAYLOAD = {"ipv4": 65507, "ipv6": 65527, "unix": 65536}


def _ipv6_loopback() -> str | None:
    """None if ::1 can be bound, else why not."""
    if not socket.has_ipv6:
        return "Python built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"::1 unavailable: {exc}"
    return None


_NO_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(_NO_IPV6 is not None, reason=_NO_IPV6 or "")

KINDS = [
    pytest.param("ipv4", id="ipv4"),
    pytest.param("ipv6", id="ipv6", marks=needs_ipv6),
    pytest.param("unix", id="unix"),
]


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="ul-dg-") as d:
        yield d


class Addrs:
    """Where a server and a client of one kind bind."""

    def __init__(self, kind: str, tmpdir: str) -> None:
        self.kind = kind
        self.tmpdir = tmpdir
        self.n = 0

    @property
    def family(self) -> int:
        return {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6,
                "unix": socket.AF_UNIX}[self.kind]

    def local(self) -> Any:
        if self.kind == "ipv4":
            return ("127.0.0.1", 0)
        if self.kind == "ipv6":
            return ("::1", 0)
        self.n += 1
        return os.path.join(self.tmpdir, f"s{self.n}")


@pytest.fixture(params=KINDS)
def addrs(request: pytest.FixtureRequest, tmpdir_short: str) -> Addrs:
    return Addrs(request.param, tmpdir_short)


class Proto(asyncio.DatagramProtocol):
    """Records everything; ``echo`` sends each datagram back to its sender."""

    def __init__(self, echo: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport: Any = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.data: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.pauses = 0
        self.resumes = 0
        self.events: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")
        self.made.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.echo:
            self.transport.sendto(data, addr)
        self.data.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.events.append("error")
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.pauses += 1

    def resume_writing(self) -> None:
        self.resumes += 1


async def _endpoint(echo: bool = False, **kwargs: Any) -> tuple[Any, Proto]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Proto(echo), **kwargs)
    return transport, proto


async def _close(*transports: Any) -> None:
    for tr in transports:
        tr.close()
    for tr in transports:
        proto = tr.get_protocol()
        if proto is not None and isinstance(proto, Proto):
            async with asyncio.timeout(GUARD):
                await proto.lost


def _addr2(addr: Any) -> Any:
    """An address as create_datagram_endpoint takes it (IPv6: host, port)."""
    return addr[:2] if isinstance(addr, tuple) else addr


def _payload(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(n))


# ---------------------------------------------------------------------------
# Echo over every kind, connected and unconnected, 1 byte to the largest size
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "connected"])
def test_echo(run: Callable[..., Any], addrs: Addrs, connected: bool) -> None:
    async def main() -> None:
        server, sproto = await _endpoint(echo=True, local_addr=addrs.local(),
                                         family=addrs.family)
        server_addr = server.get_extra_info("sockname")
        kwargs: dict[str, Any] = {"family": addrs.family}
        if connected:
            kwargs["remote_addr"] = _addr2(server_addr)
        if addrs.kind == "unix" or not connected:
            # A Unix client must be bound to be answered.
            kwargs["local_addr"] = addrs.local()
        client, cproto = await _endpoint(**kwargs)
        sock = client.get_extra_info("socket")
        assert sock.family == addrs.family
        assert sock.type == socket.SOCK_DGRAM
        if connected:
            assert client.get_extra_info("peername") == server_addr
        else:
            assert client.get_extra_info("peername") is None
        sizes = [1, 2, 1000, 32768, MAX_PAYLOAD[addrs.kind]]
        async with asyncio.timeout(GUARD):
            for seed, size in enumerate(sizes):
                data = _payload(size, seed)
                if connected:
                    client.sendto(data)
                else:
                    client.sendto(data, server_addr)
                got, frm = await sproto.data.get()
                assert got == data
                assert frm == client.get_extra_info("sockname")
                echoed, frm = await cproto.data.get()
                assert echoed == data
                assert frm == server_addr
        assert client.get_write_buffer_size() == 0
        assert sproto.errors.empty() and cproto.errors.empty()
        await _close(client, server)
        assert await cproto.lost is None and await sproto.lost is None
        assert cproto.events == ["made", "lost"]

    run(main())


def test_too_large_datagram_is_error_received(run: Callable[..., Any]) -> None:
    # One byte over the IPv4 limit: sendto fails with EMSGSIZE, reported to
    # error_received (the transport stays open), as the stock loop does.
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=("127.0.0.1", 0))
        client, cproto = await _endpoint(remote_addr=_addr2(server.get_extra_info("sockname")))
        client.sendto(b"x" * (MAX_PAYLOAD["ipv4"] + 1))
        async with asyncio.timeout(GUARD):
            exc = await cproto.errors.get()
        assert isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE
        assert not client.is_closing()
        client.sendto(b"after")
        async with asyncio.timeout(GUARD):
            assert (await sproto.data.get())[0] == b"after"
        await _close(client, server)

    run(main())


def test_many_datagrams_one_iteration_each(run: Callable[..., Any], addrs: Addrs) -> None:
    # 200 datagrams sent in a burst (fewer than the receive buffer holds):
    # every one arrives, in order, on both loops.
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=addrs.local(), family=addrs.family)
        client, _ = await _endpoint(local_addr=addrs.local(), family=addrs.family,
                                    remote_addr=_addr2(server.get_extra_info("sockname")))
        sock = server.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        n = 200 if addrs.kind != "unix" else 8   # Unix: max_dgram_qlen bounds a burst
        async with asyncio.timeout(GUARD):
            for rnd in range(200 // n):
                for i in range(n):
                    client.sendto(b"%d" % (rnd * n + i))
                for i in range(n):
                    assert (await sproto.data.get())[0] == b"%d" % (rnd * n + i)
        await _close(client, server)

    run(main())


# ---------------------------------------------------------------------------
# create_datagram_endpoint arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", [
    pytest.param(socket.AF_INET, id="AF_INET"),
    pytest.param(socket.AF_INET6, id="AF_INET6", marks=needs_ipv6),
])
def test_family_only_unbound_socket(run: Callable[..., Any], family: int) -> None:
    # family= alone: an unbound socket of that family that can sendto.
    async def main() -> None:
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        server, sproto = await _endpoint(local_addr=(host, 0))
        client, _ = await _endpoint(family=family)
        assert client.get_extra_info("socket").family == family
        assert client.get_extra_info("peername") is None
        client.sendto(b"hi", server.get_extra_info("sockname"))
        async with asyncio.timeout(GUARD):
            assert (await sproto.data.get())[0] == b"hi"
        await _close(client, server)

    run(main())


def test_family_zero_without_addresses_is_value_error(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="unexpected address family"):
            await _endpoint()
        await _loop_still_usable()

    run(main())


def test_proto_and_flags(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=("127.0.0.1", 0),
                                         proto=socket.IPPROTO_UDP,
                                         flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)
        sock = server.get_extra_info("socket")
        assert sock.proto == socket.IPPROTO_UDP
        client, _ = await _endpoint(remote_addr=server.get_extra_info("sockname"),
                                    proto=socket.IPPROTO_UDP)
        client.sendto(b"p")
        async with asyncio.timeout(GUARD):
            assert (await sproto.data.get())[0] == b"p"
        # AI_NUMERICHOST: a host name is not resolved, exactly as stock.
        with pytest.raises(socket.gaierror) as info:
            await _endpoint(local_addr=("localhost", 0), flags=socket.AI_NUMERICHOST)
        assert info.value.errno == socket.EAI_NONAME
        await _close(client, server)

    run(main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port(run: Callable[..., Any]) -> None:
    async def main() -> None:
        a, _ = await _endpoint(local_addr=("127.0.0.1", 0), reuse_port=True)
        port = a.get_extra_info("sockname")[1]
        b, _ = await _endpoint(local_addr=("127.0.0.1", port), reuse_port=True)
        for tr in (a, b):
            sock = tr.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        # Without it the port is taken: EADDRINUSE, as stock.
        with pytest.raises(OSError) as info:
            await _endpoint(local_addr=("127.0.0.1", port))
        assert info.value.errno == errno.EADDRINUSE
        await _close(a, b)

    run(main())


def test_reuse_address_is_rejected(run: Callable[..., Any]) -> None:
    # reuse_address was removed for UDP (bpo-37228): gone from the signature in 3.11.
    async def main() -> None:
        with pytest.raises(TypeError, match="reuse_address"):
            await _endpoint(local_addr=("127.0.0.1", 0), reuse_address=True)
        await _loop_still_usable()

    run(main())


def test_allow_broadcast(run: Callable[..., Any]) -> None:
    # 127.255.255.255 is lo's broadcast address (a broadcast route in the
    # local table), so this never leaves loopback.  Without SO_BROADCAST the
    # kernel refuses with EACCES, reported to error_received as stock does.
    async def main() -> None:
        try:
            receiver, rproto = await _endpoint(local_addr=("127.255.255.255", 0))
        except OSError as exc:
            pytest.skip(f"cannot bind lo's broadcast address: {exc}")
        target = ("127.255.255.255", receiver.get_extra_info("sockname")[1])
        plain, pproto = await _endpoint(local_addr=("127.0.0.1", 0))
        assert plain.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        plain.sendto(b"denied", target)
        async with asyncio.timeout(GUARD):
            exc = await pproto.errors.get()
        assert isinstance(exc, PermissionError) and exc.errno == errno.EACCES
        assert not plain.is_closing()

        bcast, bproto = await _endpoint(local_addr=("127.0.0.1", 0), allow_broadcast=True)
        assert bcast.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
        bcast.sendto(b"allowed", target)
        async with asyncio.timeout(GUARD):
            data, frm = await rproto.data.get()
        assert data == b"allowed" and frm == bcast.get_extra_info("sockname")
        assert rproto.data.empty(), "the refused datagram must not have been sent"
        assert bproto.errors.empty()
        await _close(plain, bcast, receiver)

    run(main())


def test_sock_argument(run: Callable[..., Any], addrs: Addrs) -> None:
    async def main() -> None:
        server_sock = socket.socket(addrs.family, socket.SOCK_DGRAM)
        server_sock.bind(addrs.local())
        server_sock.setblocking(False)
        server, _sproto = await _endpoint(echo=True, sock=server_sock)
        assert server.get_extra_info("socket").fileno() == server_sock.fileno()
        client_sock = socket.socket(addrs.family, socket.SOCK_DGRAM)
        client_sock.bind(addrs.local())
        client_sock.connect(server_sock.getsockname())
        client, cproto = await _endpoint(sock=client_sock)
        assert client.get_extra_info("peername") == server_sock.getsockname()
        client.sendto(b"via sock=")
        async with asyncio.timeout(GUARD):
            assert (await cproto.data.get())[0] == b"via sock="
        await _close(client, server)
        # The transport closed the sockets it was given.
        assert server_sock.fileno() == -1 and client_sock.fileno() == -1

    run(main())


def test_sock_argument_misuse(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError, match="can not be used when sock is specified"):
                await _endpoint(sock=s, local_addr=("127.0.0.1", 0))
            with pytest.raises(ValueError, match="can not be used when sock is specified"):
                await _endpoint(sock=s, family=socket.AF_INET)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, \
                pytest.raises(ValueError, match="(UDP|datagram) [Ss]ocket was expected"):
            await _endpoint(sock=s)
        await _loop_still_usable()

    run(main())


def test_unix_remote_addr_only(run: Callable[..., Any], tmpdir_short: str) -> None:
    # A Unix client with remote_addr only is unbound: it can send, not be answered.
    async def main() -> None:
        path = os.path.join(tmpdir_short, "srv")
        server, sproto = await _endpoint(local_addr=path, family=socket.AF_UNIX)
        client, _ = await _endpoint(remote_addr=path, family=socket.AF_UNIX)
        assert client.get_extra_info("peername") == path
        client.sendto(b"u")
        async with asyncio.timeout(GUARD):
            data, frm = await sproto.data.get()
        assert data == b"u"
        assert frm in (None, "", b"")  # unbound sender: no address (as stock)
        await _close(client, server)

    run(main())


def test_unix_stale_socket_file_is_replaced(run: Callable[..., Any],
                                            tmpdir_short: str) -> None:
    # A socket file left behind at local_addr is removed first (stock behaviour).
    async def main() -> None:
        path = os.path.join(tmpdir_short, "stale")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(path)
        server, sproto = await _endpoint(local_addr=path, family=socket.AF_UNIX)
        client, _ = await _endpoint(remote_addr=path, family=socket.AF_UNIX)
        client.sendto(b"fresh")
        async with asyncio.timeout(GUARD):
            assert (await sproto.data.get())[0] == b"fresh"
        await _close(client, server)

    run(main())


# ---------------------------------------------------------------------------
# ICMP errors
# ---------------------------------------------------------------------------


def _closed_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("family,host", [
    pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", id="ipv6", marks=needs_ipv6),
])
def test_port_unreachable_on_connected_endpoint(run: Callable[..., Any], family: int,
                                                host: str) -> None:
    # The ICMP port-unreachable for a connected UDP socket is queued as a
    # socket error; the loop sees it as readiness and recvfrom() raises
    # ConnectionRefusedError, which reaches error_received.  The transport
    # stays open and usable.
    async def main() -> None:
        port = _closed_port(family, host)
        client, cproto = await _endpoint(remote_addr=(host, port))
        client.sendto(b"anyone?")
        async with asyncio.timeout(GUARD):
            exc = await cproto.errors.get()
        assert type(exc) is ConnectionRefusedError
        assert exc.errno == errno.ECONNREFUSED
        assert not client.is_closing()
        assert cproto.events == ["made", "error"]
        await _close(client)
        assert await cproto.lost is None

    run(main())


def test_port_unreachable_not_reported_unconnected(run: Callable[..., Any]) -> None:
    # An unconnected UDP socket never gets ICMP errors (no IP_RECVERR): the
    # send to a closed port is silent, the next echo works, nothing reaches
    # error_received.
    async def main() -> None:
        port = _closed_port(socket.AF_INET, "127.0.0.1")
        server, _ = await _endpoint(echo=True, local_addr=("127.0.0.1", 0))
        client, cproto = await _endpoint(local_addr=("127.0.0.1", 0))
        client.sendto(b"nobody", ("127.0.0.1", port))
        client.sendto(b"echo me", server.get_extra_info("sockname"))
        async with asyncio.timeout(GUARD):
            assert (await cproto.data.get())[0] == b"echo me"
        assert cproto.errors.empty()
        await _close(client, server)

    run(main())


# ---------------------------------------------------------------------------
# Write-buffer flow control and closing with work in flight
# ---------------------------------------------------------------------------

_DGRAM = 1000


async def _fill_until_paused(client: Any, cproto: Proto) -> int:
    """sendto numbered datagrams until the transport pauses the protocol."""
    client.set_write_buffer_limits(high=8 * _DGRAM, low=2 * _DGRAM)
    n = 0
    while not cproto.pauses:
        assert n < 100_000, "the write buffer never filled"
        client.sendto(n.to_bytes(4, "big") + bytes(_DGRAM - 4))
        n += 1
    assert client.get_write_buffer_size() > 8 * _DGRAM
    return n


async def _unix_pair(tmpdir: str) -> tuple[Any, Proto, socket.socket]:
    # A connected Unix datagram client: a sender blocks (EAGAIN) once the
    # receiver's queue holds net.unix.max_dgram_qlen datagrams, so the
    # transport must buffer.  (UDP on loopback drops instead of blocking.)
    # Not a socketpair: its peer has no name, and the transport would take
    # it for unconnected.
    path = os.path.join(tmpdir, "peer")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(path)
    peer.setblocking(False)
    client, cproto = await _endpoint(remote_addr=path, family=socket.AF_UNIX)
    return client, cproto, peer


def test_write_flow_control(run: Callable[..., Any], tmpdir_short: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        client, cproto, peer = await _unix_pair(tmpdir_short)
        n = await _fill_until_paused(client, cproto)
        assert cproto.pauses == 1 and cproto.resumes == 0
        async with asyncio.timeout(GUARD):
            for i in range(n):
                data = await loop.sock_recv(peer, 2 * _DGRAM)
                assert len(data) == _DGRAM
                assert int.from_bytes(data[:4], "big") == i
        assert cproto.pauses == 1 and cproto.resumes == 1
        assert cproto.errors.empty()
        await _close(client)
        peer.close()

    run(main())


def test_close_flushes_buffer_first(run: Callable[..., Any], tmpdir_short: str) -> None:
    # close() with datagrams buffered: connection_lost waits until they are sent.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        client, cproto, peer = await _unix_pair(tmpdir_short)
        n = await _fill_until_paused(client, cproto)
        client.close()
        assert client.is_closing()
        async with asyncio.timeout(GUARD):
            for i in range(n):
                data = await loop.sock_recv(peer, 2 * _DGRAM)
                assert int.from_bytes(data[:4], "big") == i
            assert await cproto.lost is None
        peer.close()

    run(main())


def test_abort_with_buffer_and_read_in_flight(run: Callable[..., Any], tmpdir_short: str) -> None:
    # abort(): buffered datagrams are dropped, the read poll is withdrawn,
    # connection_lost(None) runs once and the socket is closed.
    async def main() -> None:
        client, cproto, peer = await _unix_pair(tmpdir_short)
        await _fill_until_paused(client, cproto)
        client.abort()
        async with asyncio.timeout(GUARD):
            assert await cproto.lost is None
        assert client.get_extra_info("socket").fileno() == -1
        assert cproto.events == ["made", "lost"]
        peer.close()
        await _loop_still_usable()

    run(main())


def test_close_in_connection_made(run: Callable[..., Any]) -> None:
    # The read poll is armed by a callback queued behind connection_made;
    # closing before it runs must leave nothing armed.
    class Closer(Proto):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            Closer, local_addr=("127.0.0.1", 0))
        async with asyncio.timeout(GUARD):
            assert await proto.lost is None
        assert transport.is_closing()
        await _loop_still_usable()

    run(main())


def test_close_with_reads_pending_many_endpoints(run: Callable[..., Any]) -> None:
    # 50 endpoints, each with a read armed and none receiving: close them all
    # in one go.
    async def main() -> None:
        pairs = [await _endpoint(local_addr=("127.0.0.1", 0)) for _ in range(50)]
        await asyncio.sleep(0)
        await _close(*(tr for tr, _ in pairs))
        await _loop_still_usable()

    run(main())


# ---------------------------------------------------------------------------
# Bad input leaves the loop usable
# ---------------------------------------------------------------------------


async def _loop_still_usable() -> None:
    server, _sproto = await _endpoint(echo=True, local_addr=("127.0.0.1", 0))
    client, cproto = await _endpoint(remote_addr=_addr2(server.get_extra_info("sockname")))
    client.sendto(b"still alive")
    async with asyncio.timeout(GUARD):
        assert (await cproto.data.get())[0] == b"still alive"
    await _close(client, server)


def test_unknown_family(run: Callable[..., Any]) -> None:
    async def main() -> None:
        bogus = 12345
        # With addresses: getaddrinfo refuses the family.
        with pytest.raises(socket.gaierror) as info:
            await _endpoint(family=bogus, local_addr=("127.0.0.1", 0))
        assert info.value.errno == socket.EAI_FAMILY
        # Without: socket() refuses it.
        with pytest.raises(OSError) as info2:
            await _endpoint(family=bogus)
        assert info2.value.errno == errno.EAFNOSUPPORT
        await _loop_still_usable()

    run(main())


def test_unresolvable_names(run: Callable[..., Any]) -> None:
    # Names that cannot resolve without the network (loopback only): a name
    # under AI_NUMERICHOST, and an IPv6 literal asked for as IPv4.
    async def main() -> None:
        with pytest.raises(socket.gaierror) as info:
            await _endpoint(remote_addr=("no-such-host.invalid", 9),
                            flags=socket.AI_NUMERICHOST)
        assert info.value.errno == socket.EAI_NONAME
        with pytest.raises(socket.gaierror) as info:
            await _endpoint(local_addr=("::1", 0), family=socket.AF_INET)
        assert info.value.errno in (socket.EAI_ADDRFAMILY, socket.EAI_NONAME)
        # Local and remote of different families: no pair matches.
        with pytest.raises(ValueError, match="can not get address information"):
            await _endpoint(local_addr=("127.0.0.1", 0), remote_addr=("::1", 9))
        await _loop_still_usable()

    run(main())


def test_bad_sendto_arguments(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=("127.0.0.1", 0))
        client, _cproto = await _endpoint(remote_addr=_addr2(server.get_extra_info("sockname")))
        with pytest.raises(TypeError):
            client.sendto("text, not bytes")
        with pytest.raises(ValueError, match="Invalid address"):
            client.sendto(b"x", ("127.0.0.1", 1))
        client.sendto(bytearray(b"mutable"))
        async with asyncio.timeout(GUARD):
            assert (await sproto.data.get())[0] == b"mutable"
        await _close(client, server)

    run(main())


@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "connected"])
def test_sendto_on_closed_transport(run: Callable[..., Any], connected: bool) -> None:
    # After connection_lost: a connected transport counts and drops the
    # datagram silently; an unconnected one has no socket left and raises
    # AttributeError from sendto (CPython behaviour, the same on both loops).
    async def main() -> None:
        server, sproto = await _endpoint(local_addr=("127.0.0.1", 0))
        kwargs: dict[str, Any] = ({"remote_addr": server.get_extra_info("sockname")}
                                  if connected else {"local_addr": ("127.0.0.1", 0)})
        client, cproto = await _endpoint(**kwargs)
        await _close(client)
        if connected:
            client.sendto(b"dropped")
            client.sendto(b"dropped")
        else:
            with pytest.raises(AttributeError):
                client.sendto(b"dropped", server.get_extra_info("sockname"))
        assert cproto.errors.empty()
        await _close(server)
        assert sproto.data.empty()
        await _loop_still_usable()

    run(main())


# ---------------------------------------------------------------------------
# sock_sendto / sock_recvfrom / sock_recvfrom_into on datagram sockets
# ---------------------------------------------------------------------------


@pytest.fixture
def dgram_pair(addrs: Addrs) -> Iterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(addrs.family, socket.SOCK_DGRAM)
    b = socket.socket(addrs.family, socket.SOCK_DGRAM)
    try:
        a.bind(addrs.local())
        b.bind(addrs.local())
        a.setblocking(False)
        b.setblocking(False)
        yield a, b
    finally:
        a.close()
        b.close()


def test_sock_sendto_recvfrom(run: Callable[..., Any], addrs: Addrs,
                              dgram_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = dgram_pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(GUARD):
            # The receive waits first (ring poll), then the datagram comes.
            pending = asyncio.create_task(loop.sock_recvfrom(b, 70000))
            await asyncio.sleep(0)
            big = _payload(MAX_PAYLOAD[addrs.kind])
            assert await loop.sock_sendto(a, big, b.getsockname()) == len(big)
            data, frm = await pending
            assert data == big and frm == a.getsockname()
            # 1 byte, data already there.
            assert await loop.sock_sendto(a, b"z", b.getsockname()) == 1
            assert await loop.sock_recvfrom(b, 10) == (b"z", a.getsockname())
            # A short buffer truncates the datagram, as recvfrom(2).
            await loop.sock_sendto(a, b"0123456789", b.getsockname())
            assert await loop.sock_recvfrom(b, 4) == (b"0123", a.getsockname())

    run(main())


def test_sock_recvfrom_into(run: Callable[..., Any], addrs: Addrs,
                            dgram_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = dgram_pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray(100)
        async with asyncio.timeout(GUARD):
            pending = asyncio.create_task(loop.sock_recvfrom_into(b, buf))
            await asyncio.sleep(0)
            await loop.sock_sendto(a, b"hello", b.getsockname())
            assert await pending == (5, a.getsockname())
            assert buf[:5] == b"hello"
            # nbytes smaller than the datagram: truncated to nbytes.
            await loop.sock_sendto(a, b"abcdefgh", b.getsockname())
            view = memoryview(buf)[10:]
            assert await loop.sock_recvfrom_into(b, view, 3) == (3, a.getsockname())
            assert buf[10:14] == b"abc\0"
            # nbytes larger than the buffer: ValueError from the socket module.
            await loop.sock_sendto(a, b"x", b.getsockname())
            with pytest.raises(ValueError):
                await loop.sock_recvfrom_into(b, bytearray(2), 10)
            assert await loop.sock_recvfrom(b, 10) == (b"x", a.getsockname())

    run(main())


def test_sock_recvfrom_cancel_loses_nothing(run: Callable[..., Any], addrs: Addrs,
                                            dgram_pair: tuple[socket.socket, socket.socket]
                                            ) -> None:
    # A cancelled sock_recvfrom consumed nothing: the next datagram goes to
    # the next call, on both loops.
    a, b = dgram_pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(GUARD):
            for _ in range(20):
                task = asyncio.create_task(loop.sock_recvfrom(b, 100))
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await loop.sock_sendto(a, b"kept", b.getsockname())
            assert await loop.sock_recvfrom(b, 100) == (b"kept", a.getsockname())

    run(main())


def test_sock_methods_connected_dgram(run: Callable[..., Any], addrs: Addrs,
                                      dgram_pair: tuple[socket.socket, socket.socket]
                                      ) -> None:
    # sock_sendall/sock_recv/sock_recv_into on connected datagram sockets.
    a, b = dgram_pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(a, b.getsockname())
        b.connect(a.getsockname())
        async with asyncio.timeout(GUARD):
            task = asyncio.create_task(loop.sock_recv(b, 100))
            await asyncio.sleep(0)
            await loop.sock_sendall(a, b"one")
            assert await task == b"one"
            await loop.sock_sendall(a, b"two")
            buf = bytearray(10)
            assert await loop.sock_recv_into(b, buf) == 3 and buf[:3] == b"two"

    run(main())


def test_sock_sendto_waits_for_room(run: Callable[..., Any], tmpdir_short: str) -> None:
    # A connected Unix datagram sender blocks once the receiver's queue is
    # full: sock_sendto waits (a ring poll for POLLOUT on uringloop) and
    # completes when the receiver reads.  Every datagram arrives, in order.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        path = os.path.join(tmpdir_short, "rx")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
            rx.bind(path)
            rx.setblocking(False)
            tx.connect(path)
            tx.setblocking(False)
            sent = 0
            async with asyncio.timeout(GUARD):
                while True:   # fill the queue with non-blocking sends
                    assert sent < 100_000
                    try:
                        tx.send(sent.to_bytes(4, "big"))
                    except BlockingIOError:
                        break
                    sent += 1
                blocked = asyncio.create_task(
                    loop.sock_sendto(tx, sent.to_bytes(4, "big"), path))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert not blocked.done()
                for i in range(sent + 1):
                    data = await loop.sock_recv(rx, 16)
                    assert int.from_bytes(data, "big") == i
                assert await blocked == 4

    run(main())


def test_socket_in_use_by_a_transport(run: Callable[..., Any]) -> None:
    # The fd of a datagram transport cannot be used by sock_*, add_reader or
    # a second transport: RuntimeError, as stock.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        tr, _proto = await _endpoint(local_addr=("127.0.0.1", 0))
        fd = tr.get_extra_info("socket").fileno()
        # A second socket object on the same fd (detached again below).
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=fd)
        try:
            raw.setblocking(False)
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recvfrom(raw, 10)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(fd, lambda: None)
            if isinstance(loop, uringloop.Loop) or sys.version_info >= (3, 12):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    await _endpoint(sock=raw)
            # else DIVERGENCE: stock 3.11 does not check a datagram transport's
            # socket (CPython added the check in 3.12); uringloop checks on
            # every version.
        finally:
            raw.detach()
        await _close(tr)
        await _loop_still_usable()

    run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_sock_recvfrom_port_unreachable(run: Callable[..., Any]) -> None:
    # A connected UDP socket's ICMP error surfaces from sock_recvfrom as
    # ConnectionRefusedError on both loops (POLLERR counts as readable).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        port = _closed_port(socket.AF_INET, "127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            async with asyncio.timeout(GUARD):
                task = asyncio.create_task(loop.sock_recvfrom(s, 100))
                await asyncio.sleep(0)
                await loop.sock_sendall(s, b"x")
                with pytest.raises(ConnectionRefusedError):
                    await task

    run(main())

