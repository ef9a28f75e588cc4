"""Zero-copy paths: SEND_ZC writes on stream transports, sendfile through ring splices.

Every test runs on stock asyncio (the oracle) and on uringloop.  The module
forces both uringloop paths on for everything it does: ``ZC_THRESHOLD`` = 1
byte (every TCP transport send is a SEND_ZC) and ``SPLICE_THRESHOLD`` = 1
byte (every sendfile of a regular file splices), unless a test sets its own.
uringloop-only assertions (the counters proving which path ran, ops left in
flight) are marked with is_uringloop().
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import ssl
import tempfile
from typing import Any, Iterator

import pytest
from netutil import RecordingProtocol, is_uringloop, read_all_sock, tcp_pair

import uringloop
from uringloop import _splice, _stream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _force_zero_copy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_stream, "ZC_THRESHOLD", 1)
    monkeypatch.setattr(_splice, "SPLICE_THRESHOLD", 1)
    yield


def _zc_sends() -> int:
    return _stream.zc_stats["sends"]


async def _settle_ops(allowed: int = 1) -> None:
    """uringloop: wait (bounded) until only the self-pipe read and ``allowed``
    more (a listening server's accept) are in flight -- a SEND_ZC op lives until
    its notification CQE."""
    loop = asyncio.get_running_loop()
    if not is_uringloop(loop):
        return
    for _ in range(500):
        if loop.statistics().ops_in_flight <= 1 + allowed:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"ops still in flight: {loop.statistics()}")  # type: ignore


class Sink(asyncio.Protocol):
    """Hashes what it receives; ``done`` when ``expected`` bytes arrived."""

    def __init__(self, expected: int) -> None:
        loop = asyncio.get_running_loop()
        self.expected = expected
        self.hash = hashlib.sha256()
        self.count = 0
        self.transport: Any = None
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)
        if self.count >= self.expected and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class Writer(asyncio.Protocol):
    """Writes ``chunks`` honouring flow control; counts pause/resume calls."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.pauses = 0
        self.resumes = 0
        self.lost_calls: list[BaseException | None] = []
        self.lost = loop.create_future()
        self.received = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data

    def pause_writing(self) -> None:
        self.pauses += 1
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.resumes += 1
        self.can_write.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_calls.append(exc)
        self.can_write.set()
        if not self.lost.done():
            self.lost.set_result(exc)

    async def send(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            await self.can_write.wait()
            self.transport.write(chunk)


async def _connected(expected: int) -> tuple[Any, Writer, Sink, Any]:
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []

    def factory() -> Sink:
        sinks.append(Sink(expected))
        return sinks[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tr, wr = await loop.create_connection(Writer, "127.0.0.1", port)
    while not sinks:
        await asyncio.sleep(0)
    return tr, wr, sinks[0], server


async def _close_server(server: Any, *transports: Any) -> None:
    """Close the server; abort what is still open (so a failed assertion never
    leaves wait_closed() waiting for connections, 3.12+)."""
    for tr in transports:
        if tr is not None and not tr.is_closing():
            tr.abort()
    server.close()
    await server.wait_closed()


# ---- SEND_ZC ----------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 256 * 1024])
@pytest.mark.asyncio
async def test_large_writes_both_directions(monkeypatch: pytest.MonkeyPatch,
                                            threshold: int) -> None:
    """16 MiB of random data each way, writes of mixed sizes on both sides of the
    threshold (bytes, bytearray, memoryview), checked byte for byte by hash."""
    monkeypatch.setattr(_stream, "ZC_THRESHOLD", threshold)
    loop = asyncio.get_running_loop()
    size = 16 * 1024 * 1024
    up, down = os.urandom(size), os.urandom(size)
    sizes = [1, 1000, 65536, 300_000, 1 << 20, 4 << 20]
    chunks_up: list[Any] = []
    pos = i = 0
    while pos < size:
        n = min(sizes[i % len(sizes)], size - pos)
        piece = up[pos:pos + n]
        kind = i % 3
        chunks_up.append(piece if kind == 0 else bytearray(piece) if kind == 1
                         else memoryview(piece))
        pos += n
        i += 1
    before = _zc_sends()

    class Echo(Sink):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.write(down[: 8 << 20])
            transport.write(down[8 << 20:])

    sinks: list[Echo] = []
    server = await loop.create_server(lambda: sinks.append(Echo(size)) or sinks[-1],
                                      "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        got = Sink(size)
        tr, _ = await loop.create_connection(lambda: got, "127.0.0.1", port)
        for chunk in chunks_up:
            tr.write(chunk)
        await asyncio.wait_for(got.done, 30)
        while not sinks:
            await asyncio.sleep(0)
        await asyncio.wait_for(sinks[0].done, 30)
        assert sinks[0].count == size and sinks[0].hash.digest() == hashlib.sha256(up).digest()
        assert got.count == size and got.hash.digest() == hashlib.sha256(down).digest()
        if is_uringloop(loop) and loop.features.send_zc:  # type: ignore[attr-defined]
            assert _zc_sends() > before
        tr.close()
        await got.lost
        await _settle_ops()
    finally:
        await _close_server(server, *(x.transport for x in sinks))


@pytest.mark.asyncio
async def test_writes_while_zc_send_in_flight_coalesce() -> None:
    """A large write, then many small ones at once: all arrive, in order."""
    tail = [bytes([i % 251]) * (i + 1) for i in range(200)]
    big = os.urandom(8 << 20)
    expected = big + b"".join(tail)
    tr, wr, sink, server = await _connected(len(expected))
    try:
        tr.write(big)
        for piece in tail:
            tr.write(piece)
        assert tr.get_write_buffer_size() >= 0
        await asyncio.wait_for(sink.done, 30)
        assert sink.hash.digest() == hashlib.sha256(expected).digest()
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await wr.lost
        await _settle_ops()
    finally:
        await _close_server(server, tr, sink.transport)


@pytest.mark.asyncio
async def test_pause_and_resume_writing_with_zc() -> None:
    tr, wr, sink, server = await _connected(0)
    sink.transport.pause_reading()   # the peer does not read: the sender backs up
    try:
        tr.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        # More than loopback's socket buffers (send + receive, autotuned) can hold.
        payload = os.urandom(48 << 20)
        sink.expected = len(payload)
        writer = asyncio.ensure_future(wr.send([payload[i:i + (1 << 20)]
                                                for i in range(0, len(payload), 1 << 20)]))
        done, _ = await asyncio.wait([writer], timeout=0.5)
        assert not done, "the writer never had to wait"
        assert wr.pauses >= 1 and wr.pauses == wr.resumes + 1   # paused now
        assert tr.get_write_buffer_size() > 256 * 1024
        sink.transport.resume_reading()
        await asyncio.wait_for(writer, 30)
        await asyncio.wait_for(sink.done, 30)
        assert sink.hash.digest() == hashlib.sha256(payload).digest()
        assert wr.pauses >= 1 and wr.resumes == wr.pauses
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await wr.lost
        await _settle_ops()
    finally:
        await _close_server(server, tr, sink.transport)


@pytest.mark.asyncio
async def test_close_flushes_zc_send() -> None:
    payload = os.urandom(8 << 20)
    tr, wr, sink, server = await _connected(len(payload))
    try:
        tr.write(payload)
        tr.close()
        assert tr.is_closing()
        await asyncio.wait_for(sink.done, 30)
        assert sink.hash.digest() == hashlib.sha256(payload).digest()
        assert await wr.lost is None
        assert wr.lost_calls == [None]
        await _settle_ops()
    finally:
        await _close_server(server, tr, sink.transport)


@pytest.mark.asyncio
async def test_abort_with_zc_send_in_flight() -> None:
    tr, wr, sink, server = await _connected(0)
    sink.transport.pause_reading()
    try:
        tr.write(os.urandom(16 << 20))
        await asyncio.sleep(0.01)
        assert tr.get_write_buffer_size() > 0   # the peer does not read: still sending
        tr.abort()
        assert await wr.lost is None
        await asyncio.sleep(0.01)
        assert wr.lost_calls == [None]
        tr.write(b"after abort")   # ignored, as stock
        if is_uringloop():
            assert tr._send_op is None and not tr._buffer
        # On loopback the notification of a SEND_ZC comes once no skb refers to
        # the pages, i.e. once the peer's receive queue is gone: close the peer.
        sink.transport.close()
        await sink.lost
        await _settle_ops()
    finally:
        await _close_server(server, tr, sink.transport)


@pytest.mark.asyncio
async def test_zc_disabled_and_unix_sockets_use_plain_sends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """AF_UNIX has no SEND_ZC: its transports keep plain sends, whatever the threshold."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        sinks: list[Sink] = []
        payload = os.urandom(4 << 20)
        server = await loop.create_unix_server(
            lambda: sinks.append(Sink(len(payload))) or sinks[-1], path)
        try:
            tr, wr = await loop.create_unix_connection(Writer, path)
            before = _zc_sends()
            tr.write(payload)
            while not sinks:
                await asyncio.sleep(0)
            await asyncio.wait_for(sinks[0].done, 30)
            assert sinks[0].hash.digest() == hashlib.sha256(payload).digest()
            if is_uringloop(loop):
                assert _zc_sends() == before
                assert tr._zc_min == 0
            tr.close()
            await wr.lost
        finally:
            await _close_server(server, *(x.transport for x in sinks))


def test_zc_threshold_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGLOOP_ZC_THRESHOLD", "65536")
    assert _stream._zc_threshold_from_env(0) == 65536
    monkeypatch.setenv("URINGLOOP_ZC_THRESHOLD", "0x100000")
    assert _stream._zc_threshold_from_env(0) == 1 << 20
    monkeypatch.setenv("URINGLOOP_ZC_THRESHOLD", "")
    assert _stream._zc_threshold_from_env(7) == 7
    monkeypatch.setenv("URINGLOOP_ZC_THRESHOLD", "big")
    with pytest.raises(ValueError, match="URINGLOOP_ZC_THRESHOLD"):
        _stream._zc_threshold_from_env(0)
    monkeypatch.setenv("URINGLOOP_SPLICE_THRESHOLD", "4096")
    assert _splice._threshold_from_env(1) == 4096


def test_disable_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", "send_zc,splice")
    loop = uringloop.Loop()
    try:
        assert not loop.features.send_zc and not loop.features.splice
    finally:
        loop.close()


# ---- sendfile over splice -----------------------------------------------------------


@pytest.fixture
def datafile() -> Iterator[tuple[Any, bytes]]:
    data = os.urandom(3 * 1024 * 1024 + 4321)   # several pipe-sized chunks, a ragged end
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        yield f, data


async def _sock_sendfile_case(f: Any, data: bytes, offset: int, count: int | None
                              ) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    try:
        before = _splice.splice_stats["calls"]
        reader = asyncio.ensure_future(read_all_sock(b))
        sent = await loop.sock_sendfile(a, f, offset, count, fallback=False)
        a.shutdown(socket.SHUT_WR)
        got = await reader
        if is_uringloop(loop) and loop.features.splice and (count or len(data)):  # type: ignore
            assert _splice.splice_stats["calls"] == before + 1
        return sent, got
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("inline", [True, False], ids=["out-inline", "out-ring"])
@pytest.mark.asyncio
async def test_sock_sendfile_whole_file(datafile: tuple[Any, bytes], inline: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_splice, "SPLICE_OUT_INLINE", inline)
    f, data = datafile
    sent, got = await _sock_sendfile_case(f, data, 0, None)
    assert sent == len(data) and got == data
    assert f.tell() == len(data)


@pytest.mark.asyncio
async def test_sock_sendfile_below_threshold_uses_os_sendfile(
        datafile: tuple[Any, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_splice, "SPLICE_THRESHOLD", 1 << 20)
    f, data = datafile
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    try:
        before = _splice.splice_stats["calls"]
        reader = asyncio.ensure_future(read_all_sock(b))
        assert await loop.sock_sendfile(a, f, 100, 500_000) == 500_000
        assert await loop.sock_sendfile(a, f, 0, None) == len(data)   # above: splices
        a.shutdown(socket.SHUT_WR)
        assert await reader == data[100:500_100] + data
        assert f.tell() == len(data)
        if is_uringloop(loop) and loop.features.splice:  # type: ignore[attr-defined]
            assert _splice.splice_stats["calls"] == before + 1
    finally:
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_sock_sendfile_offset_and_count(datafile: tuple[Any, bytes]) -> None:
    f, data = datafile
    sent, got = await _sock_sendfile_case(f, data, 12345, 2_000_000)
    assert sent == 2_000_000 and got == data[12345:12345 + 2_000_000]
    assert f.tell() == 12345 + 2_000_000


@pytest.mark.asyncio
async def test_sock_sendfile_count_beyond_eof(datafile: tuple[Any, bytes]) -> None:
    f, data = datafile
    offset = len(data) - 100_000
    sent, got = await _sock_sendfile_case(f, data, offset, 10_000_000)
    assert sent == 100_000 and got == data[offset:]
    assert f.tell() == len(data)


@pytest.mark.asyncio
async def test_sock_sendfile_offset_at_eof(datafile: tuple[Any, bytes]) -> None:
    f, data = datafile
    f.seek(77)
    sent, got = await _sock_sendfile_case(f, data, len(data), None)
    assert sent == 0 and got == b""
    assert f.tell() == 77   # nothing sent: the position is left alone, as stock


@pytest.mark.asyncio
async def test_sock_sendfile_empty_file() -> None:
    with tempfile.TemporaryFile() as f:
        sent, got = await _sock_sendfile_case(f, b"", 0, None)
        assert sent == 0 and got == b"" and f.tell() == 0


@pytest.mark.asyncio
async def test_transport_sendfile(datafile: tuple[Any, bytes]) -> None:
    """loop.sendfile() on a TCP transport, between writes: order is kept."""
    f, data = datafile
    loop = asyncio.get_running_loop()
    expected = b"head" + data[1000:] + b"tail"
    sinks: list[Sink] = []
    server = await loop.create_server(lambda: sinks.append(Sink(len(expected))) or sinks[-1],
                                      "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        tr, wr = await loop.create_connection(Writer, "127.0.0.1", port)
        before = _splice.splice_stats["calls"]
        tr.write(b"head")
        sent = await loop.sendfile(tr, f, 1000)
        tr.write(b"tail")
        assert sent == len(data) - 1000
        assert f.tell() == len(data)
        while not sinks:
            await asyncio.sleep(0)
        await asyncio.wait_for(sinks[0].done, 30)
        assert sinks[0].hash.digest() == hashlib.sha256(expected).digest()
        if is_uringloop(loop) and loop.features.splice:  # type: ignore[attr-defined]
            assert _splice.splice_stats["calls"] == before + 1
        tr.close()
        await wr.lost
        await _settle_ops()
    finally:
        await _close_server(server, *(x.transport for x in sinks))


@pytest.mark.parametrize("inline", [True, False], ids=["out-inline", "out-ring"])
@pytest.mark.asyncio
async def test_sock_sendfile_cancelled_mid_transfer(inline: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while the peer does not read: no fd or op left behind, and the
    file position says exactly how much the peer gets (stock's contract)."""
    monkeypatch.setattr(_splice, "SPLICE_OUT_INLINE", inline)
    loop = asyncio.get_running_loop()
    data = os.urandom(24 * 1024 * 1024)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        a, b = await tcp_pair()
        try:
            task = asyncio.ensure_future(loop.sock_sendfile(a, f, 0, None))
            for _ in range(100):
                await asyncio.sleep(0.005)
                if f.tell() or task.done():
                    break
            await asyncio.sleep(0.02)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            pos = f.tell()
            a.shutdown(socket.SHUT_WR)
            got = await read_all_sock(b)
            assert 0 < len(got) < len(data)
            assert got == data[:len(got)]
            if is_uringloop(loop):
                # every splice has had its final CQE: the position is exact
                assert pos == len(got)
            else:
                # stock removes its writer callback on cancellation, before the
                # callback that would update the position can run
                assert pos == 0
            await _settle_ops(0)
        finally:
            a.close()
            b.close()


@pytest.mark.asyncio
async def test_sendfile_non_regular_file_falls_back() -> None:
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 1000)
        os.close(w)
        w = -1
        with open(r, "rb", closefd=False) as pipe_file:
            before = _splice.splice_stats["calls"]
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(a, pipe_file, 0, 1000, fallback=False)
            assert _splice.splice_stats["calls"] == before
        # BytesIO: no fileno at all; the fallback sends it
        sent = await loop.sock_sendfile(a, io.BytesIO(b"y" * 5000), 0, None)
        assert sent == 5000
        a.shutdown(socket.SHUT_WR)
        assert await read_all_sock(b) == b"y" * 5000
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_sendfile_on_tls_transport_falls_back(tls: Any,
                                                    datafile: tuple[Any, bytes]) -> None:
    f, data = datafile
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []
    server = await loop.create_server(lambda: sinks.append(Sink(len(data))) or sinks[-1],
                                      "127.0.0.1", 0, ssl=tls.server)
    try:
        port = server.sockets[0].getsockname()[1]
        tr, wr = await loop.create_connection(Writer, "127.0.0.1", port, ssl=tls.client,
                                              server_hostname="localhost")
        before = _splice.splice_stats["calls"]
        try:
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await loop.sendfile(tr, f, fallback=False)
            sent = await loop.sendfile(tr, f)
        except BaseException:
            tr.abort()
            raise
        assert sent == len(data) and f.tell() == len(data)
        assert _splice.splice_stats["calls"] == before
        while not sinks:
            await asyncio.sleep(0)
        await asyncio.wait_for(sinks[0].done, 30)
        assert sinks[0].hash.digest() == hashlib.sha256(data).digest()
        tr.close()
        await wr.lost
    finally:
        await _close_server(server, *(x.transport for x in sinks))


@pytest.mark.asyncio
async def test_sock_sendfile_blocking_socket_raises(datafile: tuple[Any, bytes]) -> None:
    f, _ = datafile
    loop = asyncio.get_running_loop()
    loop.set_debug(True)   # stock checks the socket's mode in debug mode only
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError, match="non-blocking"):
            await loop.sock_sendfile(a, f)
    finally:
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_sock_sendfile_peer_closed(datafile: tuple[Any, bytes]) -> None:
    """The peer is gone before anything is sent: the same exception as stock."""
    f, _ = datafile
    loop = asyncio.get_running_loop()
    a, b = await tcp_pair()
    try:
        b.close()
        await asyncio.sleep(0.01)
        with pytest.raises(OSError) as info:
            await loop.sock_sendfile(a, f)
        assert isinstance(info.value, (BrokenPipeError, ConnectionResetError)), info.value
    finally:
        a.close()
        b.close()


# keep the flake8/mypy quiet about names only some tests use
_ = (ssl, RecordingProtocol)


def test_benchmark_script_runs(tmp_path: Any) -> None:
    """benchmarks/zerocopy.py still works (one quick round; no timing asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "zc.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.zerocopy", "--quick",
                           "--rounds", "1", "--tmpdir", str(tmp_path), "--json", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results["write"]) == {"64 KiB", "256 KiB", "1024 KiB", "4096 KiB"}
    assert {"splice", "splice-ring2", "os.sendfile"} <= set(results["sendfile"]["16 MiB cold x1"])
