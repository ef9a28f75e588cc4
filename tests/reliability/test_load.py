"""Load: 10,000 concurrent connections held and echoing, every byte checked.

The server (the loop under test) runs in this process and holds all 10,000
accepted connections (10,000 fds); the clients run in a subprocess on stock
asyncio, holding the other 10,000 fds.  Split this way each process needs
only ~10,300 fds, well under the hard RLIMIT_NOFILE of 20,000, and the loop
under test sees exactly one side of each connection (its own clients would
double its fd count and mix client and server work in one measurement).
Runs on uringloop and, for comparison, on stock asyncio.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from typing import Any

import pytest

from relutil import fd_count, raise_nofile

NCONNS = 10_000
MSGSIZE = 1000
CLIENT = os.path.join(os.path.dirname(__file__), "load_client.py")
GUARD = 90.0


class Echo(asyncio.Protocol):
    open_now = 0
    max_open = 0
    received = 0
    lost_with_error: list[BaseException] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        cls = type(self)
        cls.open_now += 1
        cls.max_open = max(cls.max_open, cls.open_now)

    def data_received(self, data: bytes) -> None:
        type(self).received += len(data)
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: BaseException | None) -> None:
        cls = type(self)
        cls.open_now -= 1
        if exc is not None:
            cls.lost_with_error.append(exc)


async def _serve_load(n: int) -> dict[str, Any]:
    class Proto(Echo):
        open_now = 0
        max_open = 0
        received = 0
        lost_with_error: list[BaseException] = []

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Proto, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, CLIENT, str(port), str(n), str(MSGSIZE), "512",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), GUARD)
    assert proc.returncode == 0, out
    result = json.loads(out)
    # The client has seen every connection closed by us; wait until we have too.
    for _ in range(10_000):
        if Proto.open_now == 0:
            break
        await asyncio.sleep(0.005)
    server.close()
    await server.wait_closed()
    result.update(server_max_open=Proto.max_open, server_open=Proto.open_now,
                  server_received=Proto.received, lost_errors=len(Proto.lost_with_error))
    return result


def test_ten_thousand_connections(run: Any) -> None:
    old = raise_nofile(NCONNS + 300)
    try:
        before = fd_count()
        result = run(_serve_load(NCONNS), debug=False)
        assert result["held"] == NCONNS
        assert result["bad"] == 0
        assert result["server_max_open"] == NCONNS
        assert result["server_open"] == 0
        assert result["server_received"] == result["bytes"] == 2 * MSGSIZE * NCONNS
        assert result["lost_errors"] == 0
        assert fd_count() == before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
