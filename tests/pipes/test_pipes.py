"""Pipe transports (connect_read_pipe/connect_write_pipe), on uringloop and stock asyncio.

uringloop reuses CPython's ``_UnixReadPipeTransport``/``_UnixWritePipeTransport``;
their readiness callbacks are single-shot polls on the ring.  Every test runs
on both loops and asserts what the stock loop does: os.pipe, FIFOs, PTYs and
character devices; flow control in both directions with the byte stream
compared; EOF, EPIPE and write_eof.  No timing assertions (GUARD only turns a
hang into a failure).
"""

# Files here are opened to be handed to pipe transports, which own and close
# them: not context managers, and opening a pipe or device does not block.
# ruff: noqa: SIM115, ASYNC230

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
import tty
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringloop

GUARD = 30.0
PIPE_CAPACITY = 64 * 1024


class ReadProto(asyncio.Protocol):
    """Collects the byte stream; optionally pauses after the first chunk."""

    def __init__(self, pause_after_first: bool = False, limit: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.events: list[str] = []
        self.pause_after_first = pause_after_first
        self.limit = limit
        self.got_data = asyncio.Event()
        self.reached = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert not self.lost.done()
        if "data" not in self.events:
            self.events.append("data")
        self.chunks.append(data)
        self.size += len(data)
        self.got_data.set()
        if self.pause_after_first and len(self.chunks) == 1:
            self.transport.pause_reading()
        if self.limit is not None and self.size >= self.limit and not self.reached.done():
            self.reached.set_result(None)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        self.eof.set_result(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


class WriteProto(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.events: list[str] = []
        self.lost = loop.create_future()
        self.resumed = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        self.resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


def _is_uringloop() -> bool:
    return isinstance(asyncio.get_running_loop(), uringloop.Loop)


def _payload(n: int) -> bytes:
    # A stream whose every 4 bytes say where they are: reordering shows.
    return b"".join(i.to_bytes(4, "big") for i in range(n // 4))


async def _read_pipe(fileobj: Any, **kwargs: Any) -> tuple[Any, ReadProto]:
    loop = asyncio.get_running_loop()
    return await loop.connect_read_pipe(lambda: ReadProto(**kwargs), fileobj)


async def _write_pipe(fileobj: Any) -> tuple[Any, WriteProto]:
    loop = asyncio.get_running_loop()
    return await loop.connect_write_pipe(WriteProto, fileobj)


async def _wait(fut: Any) -> Any:
    async with asyncio.timeout(GUARD):
        return await fut


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ul-pipe-") as d:
        yield d


@pytest.fixture
def pipe_files() -> Iterator[tuple[Any, Any]]:
    """(read file, write file) of an os.pipe; whatever the test leaves open is closed."""
    r, w = os.pipe()
    rf, wf = open(r, "rb", buffering=0), open(w, "wb", buffering=0)
    try:
        yield rf, wf
    finally:
        rf.close()
        wf.close()


def _fifo_files(tmpdir: str) -> tuple[Any, Any]:
    path = os.path.join(tmpdir, "fifo")
    os.mkfifo(path)
    # Open the read end first (non-blocking, so open() does not wait for a
    # writer), then the write end finds a reader.
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    return open(r, "rb", buffering=0), open(w, "wb", buffering=0)


def _pty_files() -> tuple[Any, Any]:
    """(master, slave) of a PTY in raw mode: bytes pass unchanged, no echo."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return open(master, "rb", buffering=0), open(slave, "wb", buffering=0)


# ---------------------------------------------------------------------------
# Kinds of pipes
# ---------------------------------------------------------------------------


async def _stream_through(rfile: Any, wfile: Any, data: bytes) -> ReadProto:
    """Write data through a write-pipe transport, read it through a read-pipe one."""
    rtr, rproto = await _read_pipe(rfile)
    wtr, wproto = await _write_pipe(wfile)
    assert wtr.can_write_eof()
    for i in range(0, len(data), 10_000):
        wtr.write(data[i:i + 10_000])
    wtr.write_eof()
    assert wtr.is_closing()
    assert await _wait(wproto.lost) is None
    assert await _wait(rproto.lost) is None
    assert rproto.data == data
    assert rproto.events == ["made", "data", "eof", "lost"]
    assert wproto.events[0] == "made" and wproto.events[-1] == "lost"
    assert rtr.get_extra_info("pipe") is rfile and wtr.get_extra_info("pipe") is wfile
    assert rfile.fileno() == -1 if hasattr(rfile, "family") else rfile.closed
    assert wfile.fileno() == -1 if hasattr(wfile, "family") else wfile.closed
    return rproto


def test_os_pipe(run: Callable[..., Any], pipe_files: tuple[Any, Any]) -> None:
    run(_stream_through(*pipe_files, _payload(300_000)))


def test_fifo(run: Callable[..., Any], tmpdir_short: str) -> None:
    rf, wf = _fifo_files(tmpdir_short)
    try:
        run(_stream_through(rf, wf, _payload(300_000)))
    finally:
        rf.close()
        wf.close()


def test_pty(run: Callable[..., Any]) -> None:
    # Master read transport, slave write transport.  Once the slave side is
    # closed, reading the master fails with EIO: connection_lost gets that
    # OSError (and the exception handler is not called), as stock.
    master, slave = _pty_files()

    async def main() -> None:
        _rtr, rproto = await _read_pipe(master, limit=20_000)
        wtr, wproto = await _write_pipe(slave)
        data = _payload(20_000)
        wtr.write(data)
        await _wait(rproto.reached)
        assert rproto.data == data
        wtr.close()
        assert await _wait(wproto.lost) is None
        exc = await _wait(rproto.lost)
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert rproto.events == ["made", "data", "lost"]

    try:
        run(main())
    finally:
        master.close()
        slave.close()


def test_pty_master_writes_slave_reads(run: Callable[..., Any]) -> None:
    master, slave = _pty_files()
    slave_r = open(os.dup(slave.fileno()), "rb", buffering=0)

    async def main() -> None:
        rtr, rproto = await _read_pipe(slave_r, limit=3000)
        wtr, wproto = await _write_pipe(master)
        data = _payload(3000)
        wtr.write(data)
        await _wait(rproto.reached)
        assert rproto.data == data
        wtr.close()
        rtr.close()
        assert await _wait(wproto.lost) is None
        assert await _wait(rproto.lost) is None

    try:
        run(main())
    finally:
        for f in (master, slave, slave_r):
            f.close()


def test_dev_null_write(run: Callable[..., Any]) -> None:
    # A character device: no reader trick, writes complete at once.
    async def main() -> None:
        f = open("/dev/null", "wb", buffering=0)
        tr, proto = await _write_pipe(f)
        for _ in range(64):
            tr.write(b"x" * 16384)
        assert tr.get_write_buffer_size() == 0
        tr.close()
        assert await _wait(proto.lost) is None
        assert f.closed
        assert proto.events == ["made", "lost"]

    run(main())


def test_dev_zero_read_bounded(run: Callable[..., Any]) -> None:
    # /dev/zero is always readable: read 1 MiB of zeros, then close.
    #
    # DIVERGENCE: the stock loop cannot watch /dev/zero at all -- epoll_ctl()
    # refuses files without poll support (EPERM), in the callback that starts
    # reading, so the exception handler gets PermissionError and no byte is
    # ever read.  A ring poll on such a file completes at once with the
    # default mask (readable and writable), so uringloop reads it.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        contexts: list[dict[str, Any]] = []
        handled = asyncio.Event()

        def handler(lp: Any, context: dict[str, Any]) -> None:
            contexts.append(context)
            handled.set()

        loop.set_exception_handler(handler)
        f = open("/dev/zero", "rb", buffering=0)
        tr, proto = await _read_pipe(f, limit=1 << 20)
        if _is_uringloop():
            await _wait(proto.reached)
        else:
            await _wait(handled.wait())
            exc = contexts[0]["exception"]
            assert isinstance(exc, PermissionError) and exc.errno == errno.EPERM
        tr.close()
        assert tr.is_closing()
        assert await _wait(proto.lost) is None
        assert f.closed
        if _is_uringloop():
            assert not contexts
            assert proto.size >= 1 << 20
            assert proto.data.count(0) == proto.size
            assert proto.events == ["made", "data", "lost"]
        else:
            assert len(contexts) == 1
            assert proto.size == 0
            assert proto.events == ["made", "lost"]

    run(main())


def test_regular_file_is_value_error(run: Callable[..., Any], tmpdir_short: str) -> None:
    path = os.path.join(tmpdir_short, "regular")
    with open(path, "wb") as f:
        f.write(b"data")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with open(path, "rb") as rf:
            with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only"):
                await loop.connect_read_pipe(asyncio.Protocol, rf)
            assert not rf.closed
        with open(path, "ab") as wf:
            with pytest.raises(ValueError, match="Pipe transport is only for pipes, "
                                                 "sockets and character devices"):
                await loop.connect_write_pipe(asyncio.Protocol, wf)
            assert not wf.closed
        # The loop is fine afterwards.
        r, w = os.pipe()
        await _stream_through(open(r, "rb", buffering=0), open(w, "wb", buffering=0),
                              b"after")

    run(main())


def test_socket_as_pipe(run: Callable[..., Any]) -> None:
    # Pipe transports also take sockets (stock allows S_ISSOCK).
    import socket

    a, b = socket.socketpair()
    run(_stream_through(a, b, _payload(100_000)))
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# Flow control
# ---------------------------------------------------------------------------


def test_writer_blocked_on_full_pipe(run: Callable[..., Any],
                                     pipe_files: tuple[Any, Any]) -> None:
    # Nobody reads: the pipe fills, the transport buffers and pauses the
    # protocol.  Then a reader drains it: resume_writing, every byte in order.
    rf, wf = pipe_files

    async def main() -> None:
        wtr, wproto = await _write_pipe(wf)
        wtr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        data = _payload(1 << 20)
        for i in range(0, len(data), 32 * 1024):
            wtr.write(data[i:i + 32 * 1024])
        assert wproto.events == ["made", "pause"]
        assert wtr.get_write_buffer_size() >= len(data) - PIPE_CAPACITY
        _rtr, rproto = await _read_pipe(rf)
        await _wait(wproto.resumed.wait())
        wtr.write_eof()
        assert await _wait(rproto.lost) is None
        assert await _wait(wproto.lost) is None
        assert rproto.data == data
        assert wproto.events == ["made", "pause", "resume", "lost"]
        assert wtr.get_write_buffer_size() == 0

    run(main())


async def _loop_turns(n: int = 5) -> None:
    """Let the loop run n rounds of real I/O (each waits on the ring/selector)."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    try:
        for _ in range(n):
            fut = loop.create_future()
            loop.add_reader(r, fut.set_result, None)
            os.write(w, b"x")
            await _wait(fut)
            loop.remove_reader(r)
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


def test_reader_pause_resume(run: Callable[..., Any], pipe_files: tuple[Any, Any]) -> None:
    rf, wf = pipe_files

    async def main() -> None:
        rtr, rproto = await _read_pipe(rf, pause_after_first=True)
        wtr, wproto = await _write_pipe(wf)
        wtr.write(b"A" * 100)
        await _wait(rproto.got_data.wait())
        assert not rtr.is_reading()
        wtr.write(b"B" * 100)
        await _loop_turns()
        # Paused: the second write waits in the pipe.
        assert rproto.data == b"A" * 100
        rtr.pause_reading()   # idempotent
        rtr.resume_reading()
        assert rtr.is_reading()
        wtr.write_eof()
        assert await _wait(rproto.lost) is None
        assert rproto.data == b"A" * 100 + b"B" * 100
        assert await _wait(wproto.lost) is None

    run(main())


def test_reader_paused_writer_backpressure(run: Callable[..., Any],
                                          pipe_files: tuple[Any, Any]) -> None:
    # The reader pauses repeatedly while 1 MiB flows through: the writer
    # blocks on the full pipe meanwhile, and the stream arrives intact.
    rf, wf = pipe_files

    async def main() -> None:
        rtr, rproto = await _read_pipe(rf)
        wtr, wproto = await _write_pipe(wf)
        data = _payload(1 << 20)
        wtr.write(data)
        wtr.write_eof()
        for _ in range(200):
            if rproto.lost.done():
                break
            rtr.pause_reading()
            await _loop_turns(1)
            rtr.resume_reading()
            await _loop_turns(1)
        assert await _wait(rproto.lost) is None
        assert await _wait(wproto.lost) is None
        assert rproto.data == data
        assert "pause" in wproto.events

    run(main())


# ---------------------------------------------------------------------------
# EOF, EPIPE, write_eof, close and abort
# ---------------------------------------------------------------------------


def test_writer_close_gives_reader_eof(run: Callable[..., Any],
                                       pipe_files: tuple[Any, Any]) -> None:
    rf, wf = pipe_files

    async def main() -> None:
        _rtr, rproto = await _read_pipe(rf)
        wtr, wproto = await _write_pipe(wf)
        wtr.write(b"last words")
        wtr.close()
        wtr.close()   # idempotent
        assert await _wait(rproto.eof) is None
        assert await _wait(rproto.lost) is None
        assert rproto.data == b"last words"
        assert rproto.events == ["made", "data", "eof", "lost"]
        assert await _wait(wproto.lost) is None

    run(main())


def test_reader_closed_empty_buffer_writer_sees_hangup(run: Callable[..., Any],
                                                       pipe_files: tuple[Any, Any]) -> None:
    # The write transport polls its fd for readability to learn that the
    # read end went away; with nothing buffered that is a clean
    # connection_lost(None), as stock.
    rf, wf = pipe_files

    async def main() -> None:
        wtr, wproto = await _write_pipe(wf)
        await asyncio.sleep(0)
        rf.close()
        assert await _wait(wproto.lost) is None
        assert wproto.events == ["made", "lost"]
        wtr.write(b"ignored")   # after the loss: counted and dropped

    run(main())


def test_reader_closed_with_buffer_is_broken_pipe(run: Callable[..., Any],
                                                  pipe_files: tuple[Any, Any]) -> None:
    # The reader closes while the writer holds buffered data:
    # connection_lost(BrokenPipeError), no exception-handler call.
    rf, wf = pipe_files

    async def main() -> None:
        rtr, rproto = await _read_pipe(rf, pause_after_first=True)
        wtr, wproto = await _write_pipe(wf)
        wtr.write(_payload(4 * PIPE_CAPACITY))
        assert wtr.get_write_buffer_size() > 0
        await _wait(rproto.got_data.wait())
        rtr.close()
        assert await _wait(rproto.lost) is None
        exc = await _wait(wproto.lost)
        assert type(exc) is BrokenPipeError
        assert wtr.is_closing()

    run(main())


def test_write_after_reader_gone_is_broken_pipe(run: Callable[..., Any],
                                                pipe_files: tuple[Any, Any]) -> None:
    # write() whose immediate os.write() fails with EPIPE (Python ignores
    # SIGPIPE): connection_lost(BrokenPipeError), no handler call.
    rf, wf = pipe_files

    async def main() -> None:
        wtr, wproto = await _write_pipe(wf)
        rf.close()
        wtr.write(b"into the void")   # before the hang-up is noticed
        exc = await _wait(wproto.lost)
        assert type(exc) is BrokenPipeError
        assert wproto.events == ["made", "lost"]

    run(main())


def test_write_eof_flushes_then_closes(run: Callable[..., Any],
                                       pipe_files: tuple[Any, Any]) -> None:
    rf, wf = pipe_files

    async def main() -> None:
        wtr, wproto = await _write_pipe(wf)
        data = _payload(3 * PIPE_CAPACITY)
        wtr.write(data)
        wtr.write_eof()
        wtr.write_eof()   # idempotent
        assert wtr.is_closing()
        wtr.write(b"after eof")   # dropped, as stock
        assert not wproto.lost.done()
        _rtr, rproto = await _read_pipe(rf)
        assert await _wait(rproto.lost) is None
        assert rproto.data == data
        assert await _wait(wproto.lost) is None

    run(main())


def test_abort_drops_buffer(run: Callable[..., Any], pipe_files: tuple[Any, Any]) -> None:
    rf, wf = pipe_files

    async def main() -> None:
        wtr, wproto = await _write_pipe(wf)
        wtr.write(_payload(4 * PIPE_CAPACITY))
        assert wtr.get_write_buffer_size() > 0
        wtr.abort()
        assert await _wait(wproto.lost) is None
        assert wf.closed
        _rtr, rproto = await _read_pipe(rf)
        assert await _wait(rproto.lost) is None
        assert rproto.size == PIPE_CAPACITY   # what the pipe held; the rest dropped

    run(main())


def test_reader_close_while_polling(run: Callable[..., Any],
                                    pipe_files: tuple[Any, Any]) -> None:
    # close() while the read poll is in flight: connection_lost(None) once,
    # the pipe closed, nothing left on the ring (conftest checks).
    rf, _wf = pipe_files

    async def main() -> None:
        rtr, rproto = await _read_pipe(rf)
        await _loop_turns(1)
        assert rtr.is_reading()
        rtr.close()
        rtr.close()
        assert not rtr.is_reading()
        assert await _wait(rproto.lost) is None
        assert rproto.events == ["made", "lost"]
        assert rf.closed

    run(main())


def test_many_pipes_at_once(run: Callable[..., Any]) -> None:
    # 100 pipe pairs streaming concurrently, each stream checked.
    async def one(i: int) -> None:
        r, w = os.pipe()
        data = bytes([i]) * (10_000 + i)
        _rtr, rproto = await _read_pipe(open(r, "rb", buffering=0))
        wtr, wproto = await _write_pipe(open(w, "wb", buffering=0))
        wtr.write(data)
        wtr.write_eof()
        assert await _wait(rproto.lost) is None
        assert await _wait(wproto.lost) is None
        assert rproto.data == data

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(100)))

    run(main())
