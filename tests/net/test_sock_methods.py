"""loop.sock_* methods: results and exact bad-input behaviour, stock asyncio as oracle.

Bad-input cases are differential: each case runs on the loop under test and
on a fresh stock asyncio loop (in a helper thread); the exception types must
be the same, and the loop under test must still work afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
from typing import Any, Callable

import pytest
from netutil import nonblocking_pair, pattern, read_all_sock, tcp_pair

pytestmark = pytest.mark.timeout(60)


# -- working calls -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_recv_sendall_roundtrip_tcp() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    with a, b:
        recv = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        assert not recv.done()
        await loop.sock_sendall(a, b"hello")
        assert await recv == b"hello"
        buf = bytearray(10)
        into = asyncio.ensure_future(loop.sock_recv_into(b, buf))
        await asyncio.sleep(0)
        await loop.sock_sendall(a, memoryview(b"0123456789abc"))
        n = await into
        assert buf[:n] == b"0123456789"[:n] and n > 0
        rest = await read_all_sock(b, 13 - n)
        assert bytes(buf[:n]) + rest == b"0123456789abc"


@pytest.mark.asyncio
async def test_recv_zero_and_empty_buffer() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        assert await loop.sock_recv(b, 0) == b""           # returns at once, as stock
        assert await loop.sock_recv_into(b, bytearray()) == 0
        await loop.sock_sendall(a, b"")                     # nothing to send: no wait
        await loop.sock_sendall(a, b"x")
        assert await loop.sock_recv(b, 1) == b"x"


@pytest.mark.asyncio
async def test_sendall_large_slow_reader() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    data = pattern(8 * 1024 * 1024, seed=1)
    with a, b:
        send = asyncio.ensure_future(loop.sock_sendall(a, bytearray(data)))
        got = bytearray()
        while len(got) < len(data):
            chunk = await loop.sock_recv(b, 7919)   # small reads: the sender must wait
            assert chunk
            got += chunk
        await send
        assert got == data


@pytest.mark.asyncio
async def test_eof_is_empty_bytes() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    with a, b:
        recv = asyncio.ensure_future(loop.sock_recv(b, 10))
        await asyncio.sleep(0)
        a.shutdown(socket.SHUT_WR)
        assert await recv == b""
        assert await loop.sock_recv_into(b, bytearray(4)) == 0


@pytest.mark.asyncio
async def test_udp_recvfrom_sendto() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.setblocking(False)
        b.setblocking(False)
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        waiting = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert await loop.sock_sendto(a, b"dgram1", b.getsockname()) == 6
        data, addr = await waiting
        assert (data, addr) == (b"dgram1", a.getsockname())
        buf = bytearray(64)
        into = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0)
        await loop.sock_sendto(a, b"dgram2", b.getsockname())
        assert await into == (6, a.getsockname())
        assert buf[:6] == b"dgram2"
        # nbytes limits the read; the rest of the datagram is discarded (UDP)
        await loop.sock_sendto(a, b"0123456789", b.getsockname())
        assert await loop.sock_recvfrom_into(b, buf, 4) == (4, a.getsockname())
        assert buf[:4] == b"0123"
        # a truncated recvfrom, as the system call does
        await loop.sock_sendto(a, b"abcdef", b.getsockname())
        assert await loop.sock_recvfrom(b, 3) == (b"abc", a.getsockname())


@pytest.mark.asyncio
async def test_connect_resolves_names_and_accept() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        await asyncio.sleep(0)
        assert not accept.done()
        with socket.socket() as c:
            c.setblocking(False)
            await loop.sock_connect(c, ("localhost", port))    # resolved by the loop
            conn, addr = await accept
            with conn:
                assert conn.gettimeout() == 0.0               # accepted non-blocking
                assert addr == c.getsockname()
                assert conn.getpeername() == c.getsockname()
                await loop.sock_sendall(c, b"ping")
                assert await loop.sock_recv(conn, 4) == b"ping"


@pytest.mark.asyncio
async def test_connect_refused() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]     # bound, not listening: connect is refused
        with socket.socket() as c:
            c.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(c, ("127.0.0.1", port))


@pytest.mark.asyncio
async def test_connect_unix() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        with socket.socket(socket.AF_UNIX) as lsock:
            lsock.bind(path)
            lsock.listen()
            lsock.setblocking(False)
            with socket.socket(socket.AF_UNIX) as c:
                c.setblocking(False)
                await loop.sock_connect(c, path)
                conn, _ = await loop.sock_accept(lsock)
                with conn:
                    await loop.sock_sendall(conn, b"u")
                    assert await loop.sock_recv(c, 1) == b"u"


@pytest.mark.asyncio
async def test_sock_sendfile() -> None:
    loop = asyncio.get_running_loop()
    data = pattern(3 * 1024 * 1024 + 17, seed=2)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        a, b = await tcp_pair()
        with a, b:
            f.seek(0)
            reader = asyncio.ensure_future(read_all_sock(b, len(data)))
            sent = await loop.sock_sendfile(a, f)
            assert sent == len(data)
            assert f.tell() == len(data)
            assert await reader == data
            # offset and count
            reader = asyncio.ensure_future(read_all_sock(b, 1000))
            sent = await loop.sock_sendfile(a, f, offset=12345, count=1000)
            assert sent == 1000
            assert f.tell() == 12345 + 1000
            assert await reader == data[12345:13345]
            # without the native path (fallback=True reads and sends)
            reader = asyncio.ensure_future(read_all_sock(b, 5000))
            f.seek(0)
            assert await loop.sock_sendfile(a, f, 100, 5000, fallback=True) == 5000
            assert await reader == data[100:5100]


@pytest.mark.asyncio
async def test_sock_method_on_transport_socket_fails_when_it_must_wait() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with b:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(a, 10)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(a, lambda: None)
        finally:
            transport.close()
            await asyncio.sleep(0)


# -- bad input: same exception type as stock ------------------------------------------------

METHODS = ["recv", "recv_into", "recvfrom", "recvfrom_into", "sendall", "sendto",
           "connect", "accept", "sendfile"]


async def _call(loop: asyncio.AbstractEventLoop, name: str, sock: Any, f: Any) -> Any:
    if name == "recv":
        return await loop.sock_recv(sock, 10)
    if name == "recv_into":
        return await loop.sock_recv_into(sock, bytearray(10))
    if name == "recvfrom":
        return await loop.sock_recvfrom(sock, 10)
    if name == "recvfrom_into":
        return await loop.sock_recvfrom_into(sock, bytearray(10))
    if name == "sendall":
        return await loop.sock_sendall(sock, b"x")
    if name == "sendto":
        return await loop.sock_sendto(sock, b"x", ("127.0.0.1", 9))
    if name == "connect":
        return await loop.sock_connect(sock, ("127.0.0.1", 9))
    if name == "accept":
        return await loop.sock_accept(sock)
    assert name == "sendfile"
    return await loop.sock_sendfile(sock, f)


async def _outcomes(coro_fns: list[Callable[[], Any]], debug: bool) -> list[tuple[str, Any]]:
    loop = asyncio.get_running_loop()
    old = loop.get_debug()
    loop.set_debug(debug)
    results: list[tuple[str, Any]] = []
    try:
        for coro_fn in coro_fns:
            try:
                result = await asyncio.wait_for(coro_fn(), 5)
            except Exception as exc:  # noqa: BLE001 - the outcome is the point
                results.append((type(exc).__name__, getattr(exc, "errno", None)))
            else:
                results.append(("ok", result))
    finally:
        loop.set_debug(old)
    return results


def _stock_outcomes(coro_fns: list[Callable[[], Any]], debug: bool) -> list[tuple[str, Any]]:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(_outcomes(coro_fns, debug))


async def _same_as_stock(coro_fns: dict[str, Callable[[], Any]], debug: bool = True
                         ) -> dict[str, tuple[str, Any]]:
    """Run each case here and on a stock loop (in a thread); the outcomes must match."""
    names = sorted(coro_fns)
    fns = [coro_fns[n] for n in names]
    stock = dict(zip(names, await asyncio.to_thread(_stock_outcomes, fns, debug)))
    here = dict(zip(names, await _outcomes(fns, debug)))
    assert here == stock
    return here


async def _loop_still_works() -> None:
    loop = asyncio.get_running_loop()
    a, b = nonblocking_pair()
    with a, b:
        recv = asyncio.ensure_future(loop.sock_recv(b, 10))
        await asyncio.sleep(0)
        await loop.sock_sendall(a, b"alive")
        assert await recv == b"alive"


_SSL_CTX: list[ssl.SSLContext] = []


def _make_sock(kind: str) -> Any:
    if kind == "blocking":
        return socket.socket()
    if kind == "ssl":
        if not _SSL_CTX:
            _SSL_CTX.append(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return _SSL_CTX[0].wrap_socket(socket.socket(), server_hostname="localhost",
                                       do_handshake_on_connect=False)
    if kind in ("closed", "closed-nodebug"):
        s = socket.socket()
        s.setblocking(False)
        s.close()
        return s
    assert kind == "not-a-socket"
    return object()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["blocking", "ssl", "closed", "closed-nodebug", "not-a-socket"])
async def test_bad_socket(kind: str) -> None:
    """Every sock_* method given a socket it must refuse (one case per method)."""
    with tempfile.TemporaryFile() as f:
        f.write(b"data")
        f.flush()

        def case(method: str) -> Callable[[], Any]:
            async def run_case() -> Any:
                sock = _make_sock(kind)
                try:
                    f.seek(0)
                    return await _call(asyncio.get_running_loop(), method, sock, f)
                finally:
                    if hasattr(sock, "close"):
                        sock.close()
            return run_case

        outcomes = await _same_as_stock({m: case(m) for m in METHODS},
                                        debug=kind != "closed-nodebug")
    for method, outcome in outcomes.items():
        if kind == "blocking":
            assert outcome[0] == "ValueError", method
        elif kind == "ssl" and method != "sendfile":
            assert outcome[0] == "TypeError", method
        elif kind == "closed":
            assert outcome == ("OSError", 9), method
    await _loop_still_works()


def _udp(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setblocking(False)
    return s


async def _case_connect_inet_to_v6() -> None:
    with socket.socket() as s:
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, ("::1", 9))


async def _case_connect_unix_to_tuple() -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", 9))


async def _case_connect_inet_to_path() -> None:
    with socket.socket() as s:
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, "/tmp/nowhere")


async def _case_sendto_inet_to_v6() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_sendto(s, b"x", ("::1", 9))


async def _case_sendto_bad_addr() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_sendto(s, b"x", "not an address")


async def _case_recv_negative() -> None:
    a, b = nonblocking_pair()
    with a, b:
        await asyncio.get_running_loop().sock_recv(a, -1)


async def _case_recv_negative_with_data() -> None:
    a, b = nonblocking_pair()
    with a, b:
        b.send(b"x")
        await asyncio.get_running_loop().sock_recv(a, -1)


async def _case_recvfrom_negative() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_recvfrom(s, -5)


async def _case_recvfrom_into_negative() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_recvfrom_into(s, bytearray(10), -1)


async def _case_recvfrom_into_too_big() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_recvfrom_into(s, bytearray(10), 11)


async def _case_recv_into_readonly() -> None:
    a, b = nonblocking_pair()
    with a, b:
        b.send(b"x")
        await asyncio.get_running_loop().sock_recv_into(a, b"immutable")


async def _case_sendall_str() -> None:
    a, b = nonblocking_pair()
    with a, b:
        await asyncio.get_running_loop().sock_sendall(a, "text")  # type: ignore[arg-type]


async def _case_accept_not_listening() -> None:
    with socket.socket() as s:
        s.setblocking(False)
        await asyncio.get_running_loop().sock_accept(s)


async def _case_accept_udp() -> None:
    with _udp() as s:
        await asyncio.get_running_loop().sock_accept(s)


async def _case_sendfile_zero_count() -> None:
    a, b = nonblocking_pair()
    with a, b, tempfile.TemporaryFile() as f:
        await asyncio.get_running_loop().sock_sendfile(a, f, 0, 0)


async def _case_sendfile_negative_offset() -> None:
    a, b = nonblocking_pair()
    with a, b, tempfile.TemporaryFile() as f:
        await asyncio.get_running_loop().sock_sendfile(a, f, -1)


async def _case_sendfile_text_file() -> None:
    a, b = nonblocking_pair()
    with a, b, tempfile.TemporaryFile("w+") as f:
        await asyncio.get_running_loop().sock_sendfile(a, f)


async def _case_sendfile_udp() -> None:
    with _udp() as s, tempfile.TemporaryFile() as f:
        await asyncio.get_running_loop().sock_sendfile(s, f)


async def _case_sendto_connected_tcp() -> None:
    a, b = nonblocking_pair()
    with a, b:
        await asyncio.get_running_loop().sock_sendto(a, b"x", ("127.0.0.1", 9))


BAD_INPUT_CASES = {
    "connect-inet-to-v6": _case_connect_inet_to_v6,
    "connect-unix-to-tuple": _case_connect_unix_to_tuple,
    "connect-inet-to-path": _case_connect_inet_to_path,
    "sendto-inet-to-v6": _case_sendto_inet_to_v6,
    "sendto-bad-addr": _case_sendto_bad_addr,
    "sendto-connected-stream": _case_sendto_connected_tcp,
    "recv-negative": _case_recv_negative,
    "recv-negative-with-data": _case_recv_negative_with_data,
    "recvfrom-negative": _case_recvfrom_negative,
    "recvfrom_into-negative": _case_recvfrom_into_negative,
    "recvfrom_into-nbytes-too-big": _case_recvfrom_into_too_big,
    "recv_into-readonly": _case_recv_into_readonly,
    "sendall-str": _case_sendall_str,
    "accept-not-listening": _case_accept_not_listening,
    "accept-udp": _case_accept_udp,
    "sendfile-zero-count": _case_sendfile_zero_count,
    "sendfile-negative-offset": _case_sendfile_negative_offset,
    "sendfile-text-file": _case_sendfile_text_file,
    "sendfile-udp": _case_sendfile_udp,
}


@pytest.mark.asyncio
async def test_bad_input() -> None:
    """Wrong families and addresses, zero/negative sizes, wrong kinds of socket."""
    outcomes = await _same_as_stock(BAD_INPUT_CASES)
    for case, outcome in outcomes.items():
        assert outcome[0] != "ok", case
    await _loop_still_works()
