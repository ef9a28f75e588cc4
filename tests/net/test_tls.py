"""TLS over the stream transport (asyncio's sslproto on top): servers, clients,
start_tls on both sides, handshake and shutdown timeouts, extra info."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from asyncio import trsock
from typing import Any

import pytest
from conftest import TLS
from netutil import pattern

pytestmark = pytest.mark.timeout(60)


async def _tls_echo_server(tls: TLS, **kw: Any) -> asyncio.Server:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls.server, **kw)


def _check_tls_extra(get: Any, client_side: bool) -> None:
    assert isinstance(get("sslcontext"), ssl.SSLContext)
    assert isinstance(get("ssl_object"), ssl.SSLObject)
    cipher = get("cipher")
    assert isinstance(cipher, tuple) and len(cipher) == 3
    assert get("compression") is None
    if client_side:
        peercert = get("peercert")
        assert isinstance(peercert, dict)
        assert ("DNS", "localhost") in peercert["subjectAltName"]
    else:
        assert get("peercert") is None                 # no client certificate asked for
    assert isinstance(get("socket"), trsock.TransportSocket)
    assert isinstance(get("peername"), tuple) and isinstance(get("sockname"), tuple)


@pytest.mark.asyncio
async def test_tls_server_and_client_streams(tls: TLS) -> None:
    server_extra: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_extra["check"] = writer.get_extra_info
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        data = await reader.readexactly(3 * 1024 * 1024)
        writer.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls.server)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client,
                                                       server_hostname="localhost")
        _check_tls_extra(writer.get_extra_info, client_side=True)
        writer.write(b"hello tls\n")
        assert await reader.readline() == b"HELLO TLS\n"
        _check_tls_extra(server_extra["check"], client_side=False)
        data = pattern(3 * 1024 * 1024, seed=30)
        writer.write(data)
        await writer.drain()
        assert await reader.readline() == hashlib.sha256(data).hexdigest().encode() + b"\n"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_tls_bulk_echo(tls: TLS) -> None:
    server = await _tls_echo_server(tls)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client,
                                                       server_hostname="localhost")
        data = pattern(8 * 1024 * 1024, seed=31)

        async def send() -> None:
            for i in range(0, len(data), 1 << 18):
                writer.write(data[i:i + (1 << 18)])
                await writer.drain()
            writer.write_eof() if writer.can_write_eof() else None

        sender = asyncio.ensure_future(send())
        got = await reader.readexactly(len(data))
        await sender
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_tls_wrong_hostname_fails_verification(tls: TLS) -> None:
    server = await _tls_echo_server(tls)
    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: errors.append(ctx))
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=tls.client,
                                          server_hostname="not-localhost")
        with pytest.raises(ValueError):      # ssl_handshake_timeout without ssl
            await asyncio.open_connection("127.0.0.1", port, ssl_handshake_timeout=1.0)
    finally:
        server.close()
        await server.wait_closed()
    # whatever the server side reported (debug mode only) is about the failed handshake
    for ctx in errors:
        assert isinstance(ctx.get("exception"), (ssl.SSLError, ConnectionError, OSError))


class UpgradingServer(asyncio.Protocol):
    """Plain text until "STARTTLS\\n", then TLS on the same connection."""

    def __init__(self, tls: TLS) -> None:
        self.tls = tls
        self.transport: Any = None
        self.buffer = b""
        self.starting = False
        self.upgraded: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Application data may follow the client's Finished in the same read, so
        # it can arrive before start_tls() has returned here: go by the state.
        self.buffer += data
        if not self.starting and self.buffer == b"STARTTLS\n":
            self.starting = True
            self.buffer = b""
            self.transport.write(b"GO AHEAD\n")
            asyncio.ensure_future(self._upgrade())
        elif self.starting and self.buffer.endswith(b"\n"):
            asyncio.ensure_future(self._reply(b"secure:" + self.buffer))
            self.buffer = b""

    async def _reply(self, line: bytes) -> None:
        (await self.upgraded).write(line)      # through the TLS transport, once we have it

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(self.transport, self, self.tls.server,
                                                  server_side=True)
        except BaseException as exc:
            self.upgraded.set_exception(exc)
            raise
        self.upgraded.set_result(self.transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.asyncio
async def test_start_tls_both_sides(tls: TLS) -> None:
    loop = asyncio.get_running_loop()
    protos: list[UpgradingServer] = []

    def factory() -> UpgradingServer:
        protos.append(UpgradingServer(tls))
        return protos[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert writer.get_extra_info("sslcontext") is None
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO AHEAD\n"
        await writer.start_tls(tls.client, server_hostname="localhost")
        _check_tls_extra(writer.get_extra_info, client_side=True)
        server_transport = await protos[0].upgraded
        _check_tls_extra(server_transport.get_extra_info, client_side=False)
        for i in range(5):
            writer.write(b"line %d\n" % i)
            assert await reader.readline() == b"secure:line %d\n" % i
        writer.close()
        await writer.wait_closed()
        assert await protos[0].lost is None
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_start_tls_client_protocol_level(tls: TLS) -> None:
    """loop.start_tls() on a client transport (not the streams helper)."""
    loop = asyncio.get_running_loop()
    protos: list[UpgradingServer] = []

    def factory() -> UpgradingServer:
        protos.append(UpgradingServer(tls))
        return protos[-1]

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = b""
            self.event = asyncio.Event()
            self.lost = loop.create_future()

        def data_received(self, data: bytes) -> None:
            self.data += data
            self.event.set()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Client, "127.0.0.1", port)
        transport.write(b"STARTTLS\n")
        while proto.data != b"GO AHEAD\n":
            proto.event.clear()
            await proto.event.wait()
        proto.data = b""
        tls_transport = await loop.start_tls(transport, proto, tls.client,
                                             server_hostname="localhost")
        assert transport.is_closing() is False
        tls_transport.write(b"over tls\n")
        while proto.data != b"secure:over tls\n":
            proto.event.clear()
            await proto.event.wait()
        tls_transport.close()
        assert await proto.lost is None
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_ssl_handshake_timeout_client(tls: TLS) -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lsock:       # accepts, never speaks TLS
        lsock.setblocking(False)
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
            await asyncio.open_connection("127.0.0.1", lsock.getsockname()[1],
                                          ssl=tls.client, server_hostname="localhost",
                                          ssl_handshake_timeout=0.1)
        conn, _ = await loop.sock_accept(lsock)
        with conn:
            # the client gave up and closed: after its ClientHello comes EOF
            while await loop.sock_recv(conn, 65536):
                pass


@pytest.mark.asyncio
@pytest.mark.allow_exception_handler
async def test_ssl_handshake_timeout_server(tls: TLS) -> None:
    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    connected = 0

    def factory() -> asyncio.Protocol:
        nonlocal connected
        connected += 1
        return asyncio.Protocol()

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=tls.server,
                                      ssl_handshake_timeout=0.1)
    try:
        with socket.socket() as raw:                          # connects, never says hello
            raw.setblocking(False)
            await loop.sock_connect(raw, server.sockets[0].getsockname())
            assert await loop.sock_recv(raw, 100) == b""      # the server aborted it
        assert connected == 1
    finally:
        server.close()
        await server.wait_closed()
    # Stock reports the aborted handshake to the exception handler in debug mode only.
    for ctx in errors:
        assert isinstance(ctx["exception"], ConnectionAbortedError)
    assert bool(errors) is loop.get_debug()


@pytest.mark.asyncio
async def test_ssl_shutdown_timeout(tls: TLS) -> None:
    """The peer completes the handshake but never answers close_notify: closing
    gives up after ssl_shutdown_timeout and wait_closed() reports TimeoutError."""
    lsock = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def peer() -> None:
        conn, _ = lsock.accept()
        with tls.server.wrap_socket(conn, server_side=True):
            release.wait(30)

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", lsock.getsockname()[1], ssl=tls.client,
            server_hostname="localhost", ssl_shutdown_timeout=0.2)
        writer.write(b"unread by the peer")
        writer.close()
        with pytest.raises(TimeoutError):
            await writer.wait_closed()
        assert writer.transport.is_closing()
    finally:
        release.set()
        await asyncio.to_thread(thread.join)
        lsock.close()


@pytest.mark.asyncio
async def test_tls_many_concurrent_connections(tls: TLS) -> None:
    server = await _tls_echo_server(tls)
    try:
        port = server.sockets[0].getsockname()[1]

        async def one(i: int) -> bytes:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls.client, server_hostname="localhost")
            writer.write(b"%d\n" % i)
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line

        lines = await asyncio.gather(*(one(i) for i in range(50)))
        assert lines == [b"%d\n" % i for i in range(50)]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_tls_peer_reset_mid_stream(tls: TLS) -> None:
    from netutil import set_linger0
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        try:
            while chunk := await reader.read(1 << 16):
                got += len(chunk)
            outcome.set_result(("eof", got))
        except Exception as exc:  # noqa: BLE001 - the outcome is the point
            outcome.set_result((type(exc), got))
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls.server)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client,
                                                       server_hostname="localhost")
        writer.write(pattern(1 << 20, seed=32))
        await writer.drain()
        set_linger0(writer.get_extra_info("socket"))
        writer.transport.abort()               # no close_notify: a reset
        kind, got = await outcome
        assert kind is ConnectionResetError
        assert got <= 1 << 20
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_sendfile_over_tls_uses_fallback(tls: TLS) -> None:
    import tempfile
    loop = asyncio.get_running_loop()
    server = await _tls_echo_server(tls)
    data = pattern(2 * 1024 * 1024 + 3, seed=33)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client,
                                                       server_hostname="localhost")
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            f.seek(0)
            echoed = asyncio.ensure_future(reader.readexactly(len(data)))
            assert await loop.sendfile(writer.transport, f) == len(data)
            assert await echoed == data
            with pytest.raises(RuntimeError):   # TLS: no native path
                await loop.sendfile(writer.transport, f, fallback=False)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_connect_accepted_socket_tls_with_buffered_app_protocol(tls: TLS) -> None:
    """Server side of TLS on an already accepted socket, feeding a BufferedProtocol."""
    loop = asyncio.get_running_loop()

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(1000)
            self.data = bytearray()
            self.transport: Any = None
            self.lost: asyncio.Future[Any] = loop.create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)   # sslproto slices it: a bytearray would copy

        def buffer_updated(self, nbytes: int) -> None:
            self.data += self.buf[:nbytes]
            if self.data.endswith(b"\n"):
                self.transport.write(b"got %d\n" % len(self.data))

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        client = asyncio.ensure_future(asyncio.open_connection(
            "127.0.0.1", lsock.getsockname()[1], ssl=tls.client, server_hostname="localhost"))
        conn, _ = await accept
        transport, proto = await loop.connect_accepted_socket(Buffered, conn, ssl=tls.server)
        reader, writer = await client
        payload = pattern(300_000, seed=34).replace(b"\n", b"_") + b"\n"
        writer.write(payload)
        assert await reader.readline() == b"got %d\n" % len(payload)
        assert bytes(proto.data) == payload
        _check_tls_extra(transport.get_extra_info, client_side=False)
        writer.close()
        await writer.wait_closed()
        assert await proto.lost is None
