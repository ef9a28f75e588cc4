"""Several loops accepting on ONE listening socket -- what every pre-fork server
(gunicorn -w N, uvicorn --workers N) does -- must share the connections.

Found while testing the gunicorn worker class: with two uringloop workers,
every connection went to the same worker, even while that worker was blocked
(and with uvicorn --workers 2: 200 of 200 requests to one worker).
Cause: IORING_OP_ACCEPT waits on the listening socket with an exclusive
wait-queue entry (the kernel's opdef sets ``poll_exclusive``, i.e.
EPOLLEXCLUSIVE), and a *multishot* accept keeps that one entry armed at its
place in the queue, so each new connection wakes the same (first-armed) ring
and never the others.  A single-shot accept is re-armed after each completion
(at the tail of the queue), and stock asyncio's epoll wakes every loop, so both
spread connections.  So the loop (uringloop/_network.py, _PASSED_IN) accepts
single-shot on every listening socket passed in with ``sock=`` -- which is how
pre-fork servers hand theirs over -- and multishot on the sockets it creates.

Here: two loops in two threads serve the same listening socket; a server
answers its loop's name and then blocks its loop for a moment.  A connection
made while one loop is blocked must be taken by the other loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import uringloop

BLOCK = 0.3          # how long a loop stays blocked after accepting
ROUNDS = 3


def new_asyncio() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop()


def new_uringloop() -> asyncio.AbstractEventLoop:
    return uringloop.Loop()


def new_uringloop_single_shot() -> asyncio.AbstractEventLoop:
    return uringloop.Loop(disable={"accept_multishot"})


class Answer(asyncio.Protocol):
    def __init__(self, name: bytes) -> None:
        self.name = name

    def connection_made(self, transport: Any) -> None:
        # Answer at once (a blocking write, not queued on the loop), then keep
        # this loop busy, as a worker running a slow synchronous handler.
        sock = transport.get_extra_info("socket")
        os.write(sock.fileno(), self.name)
        transport.close()
        time.sleep(BLOCK)


def serve(factory: Callable[[], asyncio.AbstractEventLoop], listener: socket.socket,
          name: bytes, ready: threading.Event, stop: threading.Event,
          errors: list[BaseException]) -> None:
    try:
        loop = factory()
        try:
            async def main() -> None:
                server = await asyncio.get_running_loop().create_server(
                    lambda: Answer(name), sock=listener.dup())
                async with server:
                    await asyncio.sleep(0.1)      # the accept is armed by now
                    ready.set()
                    while not stop.is_set():
                        await asyncio.sleep(0.02)
            loop.run_until_complete(main())
        finally:
            loop.close()
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def who_answers(factory: Callable[[], asyncio.AbstractEventLoop]) -> list[tuple[bytes, bytes]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    stop = threading.Event()
    errors: list[BaseException] = []
    readies = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=serve, args=(factory, listener, name, ready, stop, errors))
               for name, ready in zip((b"A", b"B"), readies)]
    try:
        for t in threads:
            t.start()
        for ready in readies:
            assert ready.wait(30) and not errors, errors
        pairs = []
        for _ in range(ROUNDS):
            answers = []
            for _ in range(2):       # the second connects while the first's loop is blocked
                with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                    answers.append(c.recv(1))
            pairs.append((answers[0], answers[1]))
            time.sleep(BLOCK + 0.1)   # both loops idle again
        return pairs
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        listener.close()
        assert not errors, errors


@pytest.mark.parametrize("factory", [
    new_asyncio,
    new_uringloop,
    new_uringloop_single_shot,
], ids=["asyncio", "uringloop", "uringloop-accept_multishot-off"])
def test_a_blocked_loop_does_not_get_the_next_connection(
        factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    pairs = who_answers(factory)
    assert all(first != second for first, second in pairs), pairs


def serve_reuse_port(factory: Callable[[], asyncio.AbstractEventLoop], port: int, name: bytes,
                     ready: threading.Event, stop: threading.Event,
                     errors: list[BaseException]) -> None:
    class Quick(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.write(name)
            transport.close()

    try:
        loop = factory()
        try:
            async def main() -> None:
                server = await asyncio.get_running_loop().create_server(
                    Quick, "127.0.0.1", port, reuse_port=True)
                async with server:
                    ready.set()
                    while not stop.is_set():
                        await asyncio.sleep(0.02)
            loop.run_until_complete(main())
        finally:
            loop.close()
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("factory", [new_asyncio, new_uringloop],
                         ids=["asyncio", "uringloop"])
def test_reuse_port_spreads_connections_with_multishot_accepts(
        factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """SO_REUSEPORT (docs/operations.md §10): each loop its own socket on one port;
    the kernel spreads connections over them, multishot accepts included."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()
    errors: list[BaseException] = []
    readies = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=serve_reuse_port,
                                args=(factory, port, name, ready, stop, errors))
               for name, ready in zip((b"A", b"B"), readies)]
    try:
        for t in threads:
            t.start()
        for ready in readies:
            assert ready.wait(30) and not errors, errors
        answers = []
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                answers.append(c.recv(1))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert set(answers) == {b"A", b"B"}, answers
