"""asyncio streams (open_connection/start_server/StreamReader/StreamWriter) on top."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from typing import Any

import pytest
from netutil import pattern, set_linger0

pytestmark = pytest.mark.timeout(60)


async def _echo_pair(handler: Any) -> tuple[asyncio.Server, asyncio.StreamReader,
                                            asyncio.StreamWriter]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return server, reader, writer


async def _close(server: asyncio.Server, writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_readline_readexactly_readuntil_at_eof() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"line one\nline two\n")
        writer.write(b"0123456789")
        writer.write(b"abc||def||")
        writer.write(b"partial line without newline")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, reader, writer = await _echo_pair(handler)
    try:
        assert await reader.readline() == b"line one\n"
        assert await reader.readline() == b"line two\n"
        assert await reader.readexactly(4) == b"0123"
        assert await reader.readexactly(6) == b"456789"
        assert await reader.readuntil(b"||") == b"abc||"
        assert await reader.readuntil(b"||") == b"def||"
        assert not reader.at_eof()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(1000)
        assert info.value.partial == b"partial line without newline"
        assert info.value.expected == 1000
        assert reader.at_eof()
        assert await reader.readline() == b""
        assert await reader.read() == b""
    finally:
        await _close(server, writer)


@pytest.mark.asyncio
async def test_readuntil_incomplete_and_limit() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 300 + b"\n" + b"tail")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=100)
    try:
        with pytest.raises(asyncio.LimitOverrunError):
            await reader.readuntil(b"\n")
        with pytest.raises(ValueError):           # readline turns the overrun into this
            await reader.readline()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readuntil(b"never")
        assert info.value.partial == b"tail"
    finally:
        await _close(server, writer)


@pytest.mark.asyncio
async def test_drain_waits_for_slow_reader() -> None:
    """drain() blocks while the peer is not reading and returns once it catches up."""
    release = asyncio.Event()
    received = bytearray()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while chunk := await reader.read(1 << 16):
            received.extend(chunk)
        writer.close()
        await writer.wait_closed()

    server, reader, writer = await _echo_pair(handler)
    data = pattern(32 * 1024 * 1024, seed=20)
    try:
        writer.transport.set_write_buffer_limits(high=1 << 20)
        writer.write(data)
        drain = asyncio.ensure_future(writer.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drain.done()                    # peer not reading: flow control holds
        release.set()
        await drain
        writer.write_eof()
        assert await reader.read() == b""
        assert received == data
    finally:
        await _close(server, writer)


@pytest.mark.asyncio
async def test_wait_closed_and_is_closing() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(data[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, reader, writer = await _echo_pair(handler)
    try:
        writer.write(b"abc")
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == b"cba"
        assert reader.at_eof()
        assert not writer.is_closing()
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        await writer.wait_closed()                  # again: returns at once
        assert writer.get_extra_info("peername")[0] == "127.0.0.1"
    finally:
        await _close(server, writer)


@pytest.mark.asyncio
async def test_reset_surfaces_as_connection_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        set_linger0(sock)
        writer.transport.abort()

    server, reader, writer = await _echo_pair(handler)
    try:
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = await reader.read(100)
                if not chunk:
                    break
                got += chunk
        assert got in (b"", b"hi")
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_unix_streams() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sock")

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_unix_server(handler, path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"over unix\n")
            assert await reader.readline() == b"OVER UNIX\n"
            assert await reader.read() == b""
            assert writer.get_extra_info("socket").family == socket.AF_UNIX
            writer.close()
            await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.asyncio
async def test_stream_reader_cancelled_read_loses_nothing() -> None:
    """A cancelled reader.read() leaves the bytes for the next read (StreamReader buffers)."""
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        writer.write(b"after the cancel")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, reader, writer = await _echo_pair(handler)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.01)
        gate.set()
        assert await reader.readexactly(16) == b"after the cancel"
    finally:
        await _close(server, writer)
