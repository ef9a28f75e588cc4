"""Client side of the 10,000-connection load test (run as a subprocess).

    python load_client.py PORT NCONNS MSGSIZE BATCH

Opens NCONNS connections to 127.0.0.1:PORT (BATCH connects in flight at a
time), on each sends MSGSIZE deterministic bytes and checks the echo byte for
byte; once every connection is open and has echoed, sends a second, different
message on all of them at once and checks again; only then closes them all.
So the server holds all NCONNS at the same time.  Prints one JSON line.
Uses stock asyncio (epoll) so the loop under test is only the server's.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys


def pattern(seed: int, n: int) -> bytes:
    block = bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(256))
    reps, rest = divmod(n, 256)
    return block * reps + block[:rest]


class Client(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.expect = b""
        self.got = bytearray()
        self.done: asyncio.Future[None] = loop.create_future()
        self.bad = 0
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.expect = data
        self.got = bytearray()
        self.done = self.loop.create_future()
        self.transport.write(data)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= len(self.expect) and not self.done.done():
            if bytes(self.got) != self.expect:
                self.bad += 1
            self.done.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost early: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(None)


async def main(port: int, n: int, size: int, batch: int) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    sem = asyncio.Semaphore(batch)

    async def one(i: int) -> None:
        async with sem:
            _, proto = await loop.create_connection(lambda: Client(loop), "127.0.0.1", port)
            clients.append(proto)
            proto.send(pattern(i, size))
            await proto.done

    await asyncio.gather(*(one(i) for i in range(n)))
    held = len(clients)
    for i, c in enumerate(clients):
        c.send(pattern(i + n, size))
    await asyncio.gather(*(c.done for c in clients))
    bad = sum(c.bad for c in clients)
    for c in clients:
        c.transport.close()
    await asyncio.gather(*(c.lost for c in clients))
    return {"held": held, "bad": bad, "bytes": 2 * size * held}


if __name__ == "__main__":
    port, n, size, batch = map(int, sys.argv[1:5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    print(json.dumps(asyncio.run(main(port, n, size, batch))), flush=True)
