"""Servers and connection set-up: create_server options, Server API, Unix sockets,
connect_accepted_socket, create_connection options (local_addr, sock=, Happy
Eyeballs, interleave, all_errors)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import socket
import sys
import tempfile
from typing import Any, Callable, Iterator

import pytest
from netutil import (RecordingProtocol, assert_no_ops_in_flight, has_ipv6, is_uringloop,
                     read_all_sock)

pytestmark = pytest.mark.timeout(60)

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


class Echo(asyncio.Protocol):
    instances: list["Echo"] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _roundtrip(addr: Any, family: int = socket.AF_INET, msg: bytes = b"ping") -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, addr)
        await loop.sock_sendall(s, msg)
        return await read_all_sock(s, len(msg))


async def _spin(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_create_server_port0_single_host() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    try:
        assert server.get_loop() is loop
        assert server.is_serving()
        (sock,) = server.sockets
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0   # stock default
        assert await _roundtrip(("127.0.0.1", port)) == b"ping"
    finally:
        server.close()
        await server.wait_closed()
    assert not server.is_serving()
    assert server.sockets == ()


@pytest.mark.asyncio
async def test_create_server_host_list() -> None:
    loop = asyncio.get_running_loop()
    hosts = ["127.0.0.1", "::1"] if has_ipv6() else ["127.0.0.1", "127.0.0.2"]
    server = await loop.create_server(Echo, hosts, 0)
    try:
        assert len(server.sockets) == 2
        for sock in server.sockets:
            addr = sock.getsockname()
            assert addr[0] in hosts
            assert await _roundtrip(addr[:2], sock.family, b"to " + addr[0].encode()) \
                == b"to " + addr[0].encode()
        if has_ipv6():
            v6 = [s for s in server.sockets if s.family == socket.AF_INET6][0]
            assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) != 0
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_reuse_port_two_servers_share_a_port() -> None:
    loop = asyncio.get_running_loop()
    counts = [0, 0]

    def factory(i: int) -> Any:
        def make() -> Echo:
            counts[i] += 1
            return Echo()
        return make

    s1 = await loop.create_server(factory(0), "127.0.0.1", 0, reuse_port=True)
    port = s1.sockets[0].getsockname()[1]
    s2 = await loop.create_server(factory(1), "127.0.0.1", port, reuse_port=True,
                                  reuse_address=False)
    try:
        for s in s1.sockets + s2.sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        assert s2.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        for i in range(40):
            assert await _roundtrip(("127.0.0.1", port), msg=b"%d" % i) == b"%d" % i
        assert sum(counts) == 40
    finally:
        for s in (s1, s2):
            s.close()
            await s.wait_closed()


@pytest.mark.asyncio
async def test_bind_conflict_without_reuse_port() -> None:
    loop = asyncio.get_running_loop()
    s1 = await loop.create_server(Echo, "127.0.0.1", 0)
    try:
        port = s1.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as info:
            await loop.create_server(Echo, "127.0.0.1", port)
        assert info.value.errno == 98    # EADDRINUSE
    finally:
        s1.close()
        await s1.wait_closed()


@pytest.mark.asyncio
async def test_backlog_is_honoured_for_bursts() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=200)
    try:
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.gather(*(_roundtrip(("127.0.0.1", port), msg=b"b%d" % i)
                                         for i in range(150)))
        assert results == [b"b%d" % i for i in range(150)]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_start_serving_false_then_start_serving() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
    try:
        assert not server.is_serving()
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionRefusedError):     # not even listening yet
            await _roundtrip(("127.0.0.1", port))
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()                     # idempotent
        assert await _roundtrip(("127.0.0.1", port)) == b"ping"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_serve_forever() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
    port = server.sockets[0].getsockname()[1]
    task = asyncio.ensure_future(server.serve_forever())
    await _spin(3)
    assert server.is_serving()
    assert await _roundtrip(("127.0.0.1", port)) == b"ping"
    with pytest.raises(RuntimeError):
        await server.serve_forever()                     # already being awaited
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.is_serving()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await _roundtrip(("127.0.0.1", port))


@pytest.mark.asyncio
async def test_close_keeps_connections_and_wait_closed() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ct, cp = await loop.create_connection(RecordingProtocol, "127.0.0.1", port)
    await cp.made
    ct.write(b"1")
    await cp.wait_bytes(1)
    server.close()
    assert not server.is_serving()
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await _roundtrip(("127.0.0.1", port))
    ct.write(b"2")                                      # the connection survives close()
    await cp.wait_bytes(2)
    waiter = asyncio.ensure_future(server.wait_closed())
    await _spin(5)
    # 3.12+: wait_closed() waits for the connections too; 3.11 returns at once.
    assert waiter.done() is (not PY312)
    ct.close()
    await waiter
    assert await cp.lost is None


@pytest.mark.asyncio
@pytest.mark.skipif(not PY313, reason="Server.close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
async def test_close_clients_abort_clients(how: str) -> None:
    loop = asyncio.get_running_loop()
    server_protos: list[RecordingProtocol] = []

    def factory() -> RecordingProtocol:
        p = RecordingProtocol()
        server_protos.append(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await loop.create_connection(RecordingProtocol, "127.0.0.1", port)
               for _ in range(3)]
    while len(server_protos) < 3:
        await asyncio.sleep(0)
    for sp in server_protos:
        await sp.made
        sp.transport.write(b"queued" * 1000)
    server.close()
    getattr(server, how)()
    for sp in server_protos:
        assert await sp.lost is None
    for ct, cp in clients:
        exc = await cp.lost
        assert exc is None or isinstance(exc, ConnectionResetError)
        if how == "close_clients":
            assert exc is None and bytes(cp.data) == b"queued" * 1000
    await server.wait_closed()


@pytest.mark.asyncio
async def test_unix_server_and_connection() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "srv.sock")
        server = await loop.create_unix_server(Echo, path)
        try:
            assert server.sockets[0].family == socket.AF_UNIX
            assert server.sockets[0].getsockname() == path
            ct, cp = await loop.create_unix_connection(RecordingProtocol, path)
            await cp.made
            assert ct.get_extra_info("peername") == path
            assert isinstance(ct.get_extra_info("sockname"), str)
            ct.write(b"unix echo")
            await cp.wait_bytes(9)
            assert cp.data == b"unix echo"
            ct.close()
            assert await cp.lost is None
        finally:
            server.close()
            await server.wait_closed()
        # 3.13 removes the socket file on close (cleanup_socket=True); before, it stays.
        assert os.path.exists(path) is (not PY313)


@pytest.mark.asyncio
@pytest.mark.skipif(not PY313, reason="cleanup_socket is 3.13+")
async def test_unix_server_cleanup_socket_false() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "keep.sock")
        server = await loop.create_unix_server(Echo, path, cleanup_socket=False)
        server.close()
        await server.wait_closed()
        assert os.path.exists(path)
        # a stale socket file is replaced by the next server
        server = await loop.create_unix_server(Echo, path)
        try:
            assert await _roundtrip(path, socket.AF_UNIX) == b"ping"
        finally:
            server.close()
            await server.wait_closed()
        assert not os.path.exists(path)


@pytest.mark.asyncio
async def test_unix_server_from_sock() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        server = await loop.create_unix_server(Echo, sock=sock)
        try:
            assert await _roundtrip(path, socket.AF_UNIX) == b"ping"
            with socket.socket(socket.AF_UNIX) as extra, pytest.raises(ValueError):
                await loop.create_unix_server(Echo, path, sock=extra)   # path and sock
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.asyncio
async def test_connect_accepted_socket() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        client = socket.create_connection(lsock.getsockname())
        accepted, _ = lsock.accept()
        with client:
            transport, proto = await loop.connect_accepted_socket(RecordingProtocol, accepted)
            await proto.made
            assert accepted.gettimeout() == 0
            assert transport.get_extra_info("peername") == client.getsockname()
            client.sendall(b"to accepted")
            await proto.wait_bytes(11)
            transport.write(b"back")
            transport.close()
            assert await proto.lost is None
            client.settimeout(10)
            assert client.recv(100) == b"back"
    with pytest.raises(ValueError):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            await loop.connect_accepted_socket(RecordingProtocol, udp)


@pytest.mark.asyncio
async def test_create_connection_local_addr_and_sock() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        ct, cp = await loop.create_connection(RecordingProtocol, "127.0.0.1", port,
                                              local_addr=("127.0.0.1", local_port))
        assert ct.get_extra_info("sockname") == ("127.0.0.1", local_port)
        ct.close()
        await cp.lost
        # sock=: a blocking connected socket is made non-blocking
        sock = socket.create_connection(("127.0.0.1", port))
        ct, cp = await loop.create_connection(RecordingProtocol, sock=sock)
        assert sock.gettimeout() == 0
        assert ct.get_extra_info("socket").fileno() == sock.fileno()
        ct.write(b"via sock")
        await cp.wait_bytes(8)
        ct.close()
        await cp.lost
        with socket.socket() as extra, pytest.raises(ValueError):   # host and sock together
            await loop.create_connection(RecordingProtocol, "127.0.0.1", port, sock=extra)
    finally:
        server.close()
        await server.wait_closed()


def _fake_getaddrinfo(loop: asyncio.AbstractEventLoop, infos: list[Any]) -> None:
    async def getaddrinfo(host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        return [i for i in infos if family in (0, i[0])]
    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("interleave", [None, 1, 2])
async def test_happy_eyeballs_falls_through_to_working_address(interleave: Any) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    refused = _refused_port()
    tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    infos: list[Any] = [(socket.AF_INET, *tcp, ("127.0.0.1", refused))]
    if has_ipv6():
        infos.append((socket.AF_INET6, *tcp, ("::1", refused, 0, 0)))
    infos.append((socket.AF_INET, *tcp, ("127.0.0.1", port)))
    _fake_getaddrinfo(loop, infos)
    try:
        ct, cp = await loop.create_connection(RecordingProtocol, "example.invalid", port,
                                              happy_eyeballs_delay=0.05,
                                              interleave=interleave)
        assert ct.get_extra_info("peername") == ("127.0.0.1", port)
        ct.close()
        assert await cp.lost is None
    finally:
        del loop.getaddrinfo   # type: ignore[attr-defined]
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [None, 0.05])
async def test_connection_errors_and_all_errors(delay: Any) -> None:
    loop = asyncio.get_running_loop()
    p1, p2 = _refused_port(), _refused_port()
    tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    _fake_getaddrinfo(loop, [(socket.AF_INET, *tcp, ("127.0.0.1", p1)),
                             (socket.AF_INET, *tcp, ("127.0.0.1", p2))])
    try:
        with pytest.raises(OSError) as info:
            await loop.create_connection(RecordingProtocol, "two.invalid", 1,
                                         happy_eyeballs_delay=delay)
        assert type(info.value) is OSError
        assert str(info.value).startswith("Multiple exceptions:")
        if PY312:
            with pytest.raises(ExceptionGroup) as group:
                await loop.create_connection(RecordingProtocol, "two.invalid", 1,
                                             happy_eyeballs_delay=delay, all_errors=True)
            assert len(group.value.exceptions) == 2
            assert all(isinstance(e, ConnectionRefusedError)
                       for e in group.value.exceptions)
    finally:
        del loop.getaddrinfo   # type: ignore[attr-defined]
    with pytest.raises(ConnectionRefusedError):       # a single address: that error
        await loop.create_connection(RecordingProtocol, "127.0.0.1", p1)


def _lowest_free_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)     # the kernel hands out the lowest free one
    os.close(fd)
    return fd


async def _wait_for(predicate: Callable[[], bool], iterations: int = 2000) -> None:
    for _ in range(iterations):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@contextlib.contextmanager
def _low_fd_limit(room: int = 20) -> Iterator[None]:
    """Lower RLIMIT_NOFILE to just above what is open (an accept armed now sees it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd() + room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _exhaust_fds_until_accept_fails(port: int, contexts: list[dict[str, Any]]
                                          ) -> list[socket.socket]:
    """Connect clients while the fd table is full: the server's accept fails."""
    clients = [socket.socket() for _ in range(3)]
    fillers: list[int] = []
    try:
        for c in clients:
            c.setblocking(False)
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        for c in clients:
            assert c.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        await _wait_for(lambda: bool(contexts))
    except BaseException:
        for c in clients:
            c.close()
        raise
    finally:
        for fd in fillers:
            os.close(fd)
    return clients


@pytest.mark.asyncio
@pytest.mark.allow_exception_handler
async def test_accept_out_of_fds_pauses_then_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(asyncio.constants, "ACCEPT_RETRY_DELAY", 0.05)
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    with _low_fd_limit():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = await _exhaust_fds_until_accept_fails(port, contexts)
    try:
        assert contexts[0]["message"] == "socket.accept() out of system resource"
        assert isinstance(contexts[0]["exception"], OSError)
        assert contexts[0]["exception"].errno == errno.EMFILE
        assert contexts[0]["exception"].strerror == os.strerror(errno.EMFILE)
        assert contexts[0]["socket"].getsockname() == ("127.0.0.1", port)
        # the connections waited in the backlog; after the retry delay all are served
        for i, c in enumerate(clients):
            await loop.sock_sendall(c, b"after EMFILE %d" % i)
            assert await read_all_sock(c, 14) == b"after EMFILE %d" % i
        assert all(ctx["message"] == "socket.accept() out of system resource"
                   for ctx in contexts)
    finally:
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
@pytest.mark.allow_exception_handler
async def test_server_closed_while_accept_retry_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(asyncio.constants, "ACCEPT_RETRY_DELAY", 0.05)
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    with _low_fd_limit():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = await _exhaust_fds_until_accept_fails(port, contexts)
    for c in clients:
        c.close()
    server.close()                      # before the retry runs
    await server.wait_closed()
    n = len(contexts)
    await asyncio.sleep(0.2)            # the retry's time has come and gone
    late = contexts[n:]
    if is_uringloop(loop):
        # Nothing to resume: the server is closed.
        assert late == []
        await assert_no_ops_in_flight()
    else:
        # Divergence: stock's retry (one per failed accept) re-registers the
        # closed socket (fd -1): each reports a ValueError to the exception handler.
        assert late and all(type(ctx.get("exception")) is ValueError for ctx in late)


@pytest.mark.asyncio
async def test_happy_eyeballs_cancels_the_hanging_attempt() -> None:
    """The first address never answers (its accept queue is full); after the delay
    the second attempt wins and the first, still connecting, is cancelled."""
    from test_sock_cancel import _full_listener
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging, fillers = _full_listener()
    tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    _fake_getaddrinfo(loop, [(socket.AF_INET, *tcp, hanging.getsockname()),
                             (socket.AF_INET, *tcp, ("127.0.0.1", port))])
    try:
        for _ in range(3):
            ct, cp = await loop.create_connection(RecordingProtocol, "two.invalid", port,
                                                  happy_eyeballs_delay=0.02)
            assert ct.get_extra_info("peername") == ("127.0.0.1", port)
            ct.write(b"won")
            await cp.wait_bytes(3)
            ct.close()
            assert await cp.lost is None
        await assert_no_ops_in_flight(allowed=1)     # the server's accept
    finally:
        del loop.getaddrinfo   # type: ignore[attr-defined]
        hanging.close()
        for f in fillers:
            f.close()
        server.close()
        await server.wait_closed()
