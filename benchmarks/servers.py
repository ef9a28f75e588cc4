"""Benchmark servers: one process, one event loop, one kind of server.

    python -m benchmarks.servers --loop asyncio --kind protocol --cpu 0

The process pins itself to --cpu, runs the server on the loop named by
--loop (through ``asyncio.Runner(loop_factory=...)``), listens on an
ephemeral port of 127.0.0.1 and prints ``{"port": N, "pid": P}`` on stdout
once it accepts connections.  It serves until it is killed, or until its
stdin reaches EOF (the runner went away).

Kinds (echo servers echo every byte; HTTP servers answer ``GET /`` with
``HTTP_BODY``, as benchmarks/c/echo_server.c does):

    protocol   asyncio.Protocol echo
    buffered   asyncio.BufferedProtocol echo
    streams    asyncio.start_server echo (StreamReader/StreamWriter)
    sockets    loop.sock_accept / sock_recv / sock_sendall echo
    aiohttp    aiohttp.web hello world
    httptools  asyncio.Protocol + httptools parser hello world
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.loops import PYTHON_LOOPS, loop_factory

HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Length: %d\r\n"
                 b"\r\n%s" % (len(HTTP_BODY), HTTP_BODY))
READ_SIZE = 64 * 1024
BACKLOG = 4096

# kind -> the third-party module it needs (checked by the runner up front)
REQUIRES = {"aiohttp": "aiohttp", "httptools": "httptools"}


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.view = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        # Copied: a transport may keep what it could not send yet, and this
        # buffer is reused by the next read (CPython 3.12's selector
        # transport keeps a memoryview as is).
        self.transport.write(bytes(self.view[:nbytes]))


class HttptoolsProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        import httptools
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.error = httptools.HttpParserError

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.error:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(HTTP_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _echo_socket(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    with conn:
        try:
            while data := await loop.sock_recv(conn, READ_SIZE):
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass


async def _accept_sockets(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    tasks: set[asyncio.Task[None]] = set()
    while True:
        conn, _ = await loop.sock_accept(sock)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_echo_socket(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _start_protocol(sock: socket.socket, factory: Callable[[], Any]) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, sock=sock, backlog=BACKLOG)


async def _start_streams(sock: socket.socket) -> Any:
    return await asyncio.start_server(_echo_stream, sock=sock, backlog=BACKLOG)


async def _start_sockets(sock: socket.socket) -> Any:
    loop = asyncio.get_running_loop()
    return loop.create_task(_accept_sockets(loop, sock))


async def _start_aiohttp(sock: socket.socket) -> Any:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=HTTP_BODY, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    return runner


STARTERS: dict[str, Callable[[socket.socket], Awaitable[Any]]] = {
    "protocol": lambda sock: _start_protocol(sock, EchoProtocol),
    "buffered": lambda sock: _start_protocol(sock, EchoBufferedProtocol),
    "streams": _start_streams,
    "sockets": _start_sockets,
    "aiohttp": _start_aiohttp,
    "httptools": lambda sock: _start_protocol(sock, HttptoolsProtocol),
}


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def serve(kind: str) -> None:
    sock = _listening_socket()
    server = await STARTERS[kind](sock)  # noqa: F841 - kept alive while serving
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
    await asyncio.get_running_loop().create_future()  # serve until killed


def _exit_when_stdin_closes() -> None:
    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)
    threading.Thread(target=watch, name="stdin-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=PYTHON_LOOPS, required=True)
    parser.add_argument("--kind", choices=sorted(STARTERS), required=True)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _exit_when_stdin_closes()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(serve(args.kind))


if __name__ == "__main__":
    main()
