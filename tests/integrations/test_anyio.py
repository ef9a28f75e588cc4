"""anyio on uringloop:

    anyio.run(main, backend="asyncio",
              backend_options={"loop_factory": uringloop.new_event_loop})

Each program runs twice -- on uringloop and on stock asyncio, the oracle -- and
the results must be equal; each checks, inside, which loop it runs on.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uringloop
from procutil import require

anyio = require("anyio")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uringloop": uringloop.new_event_loop,
}


def on_both(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run `main` with anyio on both loops; return the (equal) result."""
    results = {}
    for name, factory in LOOPS.items():
        async def checked() -> Any:
            loop = asyncio.get_running_loop()
            assert isinstance(loop, uringloop.Loop) == (name == "uringloop"), type(loop)
            return await main()
        results[name] = anyio.run(checked, backend="asyncio",
                                  backend_options={"loop_factory": factory})
    assert results["uringloop"] == results["asyncio"]
    return results["uringloop"]


def test_task_groups() -> None:
    async def main() -> Any:
        order: list[int] = []

        async def sleeper(n: int) -> None:
            await anyio.sleep(n * 0.01)
            order.append(n)

        async def starter(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            await anyio.sleep(0)
            task_status.started("ready")
            await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            for n in (3, 1, 2):
                tg.start_soon(sleeper, n)
            started = await tg.start(starter)

        cancelled = []

        async def victim() -> None:
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

        async def failing() -> None:
            await anyio.sleep(0.01)
            raise KeyError("boom")

        caught: list[str] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(victim)
                tg.start_soon(failing)
        except BaseException as eg:         # ExceptionGroup
            caught = [repr(e) for e in eg.exceptions]  # type: ignore[attr-defined]
        return order, started, cancelled, caught

    assert on_both(main) == ([1, 2, 3], "ready", [True], ["KeyError('boom')"])


def test_cancel_scopes() -> None:
    async def main() -> Any:
        out = []
        with anyio.move_on_after(0.02) as scope:
            await anyio.sleep(10)
        out.append(("move_on_after", scope.cancelled_caught))
        try:
            with anyio.fail_after(0.02):
                await anyio.sleep(10)
        except TimeoutError:
            out.append(("fail_after", "TimeoutError"))
        with anyio.CancelScope() as outer:
            with anyio.CancelScope(shield=True):
                outer.cancel()
                await anyio.sleep(0.01)          # shielded: not cancelled
                out.append(("shielded", "finished"))
            await anyio.sleep(10)                # cancelled here
            out.append(("not reached", True))
        out.append(("outer", outer.cancelled_caught))
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            tg.cancel_scope.cancel()
        out.append(("task group cancelled", tg.cancel_scope.cancel_called))
        return out

    assert on_both(main) == [("move_on_after", True), ("fail_after", "TimeoutError"),
                             ("shielded", "finished"), ("outer", True),
                             ("task group cancelled", True)]


def test_tcp_sockets() -> None:
    payload = bytes(range(256)) * 4096          # 1 MiB

    async def main() -> Any:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        served = []

        async def handle(stream: Any) -> None:
            async with stream:
                received = b""
                while len(received) < len(payload):
                    received += await stream.receive()
                served.append(hashlib.sha256(received).hexdigest())
                await stream.send(b"got " + str(len(received)).encode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            replies = []
            for _ in range(3):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    assert client.extra(anyio.abc.SocketAttribute.remote_port) == port
                    await client.send(payload)
                    replies.append(await client.receive())
            # Three clients at once.
            results: list[bytes] = []

            async def one() -> None:
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(payload)
                    results.append(await client.receive())
            async with anyio.create_task_group() as clients:
                for _ in range(3):
                    clients.start_soon(one)
            tg.cancel_scope.cancel()
        await listener.aclose()
        return replies, sorted(results), served

    replies, concurrent, served = on_both(main)
    assert replies == [b"got 1048576"] * 3 and concurrent == [b"got 1048576"] * 3
    assert served == [hashlib.sha256(payload).hexdigest()] * 6


def test_udp_and_buffered_streams() -> None:
    async def main() -> Any:
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as server, \
                await anyio.create_connected_udp_socket(
                    "127.0.0.1", server.extra(anyio.abc.SocketAttribute.local_port),
                    local_host="127.0.0.1") as client:
            await client.send(b"ping")
            data, addr = await server.receive()
            await server.sendto(data.upper(), *addr)
            reply = await client.receive()
        # A buffered stream over a TCP pair: receive_until / receive_exactly.
        from anyio.streams.buffered import BufferedByteReceiveStream
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        lines = []
        async with anyio.create_task_group() as tg:
            async def serve(stream: Any) -> None:
                async with stream:
                    await stream.send(b"line one\nline two\nXYZ")
            tg.start_soon(listener.serve, serve)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                buffered = BufferedByteReceiveStream(client)
                lines.append(await buffered.receive_until(b"\n", 100))
                lines.append(await buffered.receive_until(b"\n", 100))
                lines.append(await buffered.receive_exactly(3))
            tg.cancel_scope.cancel()
        await listener.aclose()
        return reply, lines

    assert on_both(main) == (b"PING", [b"line one", b"line two", b"XYZ"])


def test_to_thread_and_from_thread() -> None:
    async def main() -> Any:
        loop_thread = threading.get_ident()

        def work(n: int) -> tuple[int, bool]:
            # Back into the loop from the worker thread.
            doubled = anyio.from_thread.run(double, n)
            return doubled, threading.get_ident() != loop_thread

        async def double(n: int) -> int:
            await anyio.sleep(0)
            return 2 * n

        results = []
        async with anyio.create_task_group() as tg:
            async def one(n: int) -> None:
                results.append(await anyio.to_thread.run_sync(work, n))
            for n in range(5):
                tg.start_soon(one, n)
        limiter = anyio.CapacityLimiter(1)
        limited = await anyio.to_thread.run_sync(lambda: "limited", limiter=limiter)
        return sorted(results), limited

    assert on_both(main) == ([(0, True), (2, True), (4, True), (6, True), (8, True)], "limited")


def test_processes_events_and_memory_streams() -> None:
    async def main() -> Any:
        proc = await anyio.run_process([sys.executable, "-c", "print('hi from child')"])
        send, receive = anyio.create_memory_object_stream[int](2)
        got = []
        event = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def producer() -> None:
                async with send:
                    for i in range(5):
                        await send.send(i)
                event.set()
            tg.start_soon(producer)
            async with receive:
                async for item in receive:
                    got.append(item)
            await event.wait()
        a, b = socket.socketpair()
        with a, b:
            b.send(b"x")
            with anyio.fail_after(10):
                await anyio.wait_readable(a)
            readable = a.recv(1)
        return proc.returncode, proc.stdout, got, readable

    assert on_both(main) == (0, b"hi from child\n", [0, 1, 2, 3, 4], b"x")
