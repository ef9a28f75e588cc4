"""Misbehaving protocols: callbacks that raise, BufferedProtocols that hand out
empty or read-only buffers.  uringloop reports them exactly as stock asyncio
does (exception-handler calls: message and exception type; whether and how
connection_lost is called), loses none of the bytes delivered before the
failure, and stays usable.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import pytest

import uringloop
from relutil import quiesce

GUARD = 10.0


class Boom(Exception):
    pass


def make_protocol(fault: str, events: list[Any]) -> asyncio.BaseProtocol:
    buffered = fault.startswith("buffered")

    class P(asyncio.BufferedProtocol if buffered else asyncio.Protocol):  # type: ignore[misc]
        def __init__(self) -> None:
            self.buf = bytearray(100)

        def connection_made(self, tr: Any) -> None:
            events.append("made")
            if fault == "connection_made":
                raise Boom("made")

        def data_received(self, data: bytes) -> None:
            events.append(("data", bytes(data)))
            if fault == "data_received":
                raise Boom("data")

        def get_buffer(self, sizehint: int) -> Any:
            if fault == "buffered-get_buffer-raises":
                raise Boom("get_buffer")
            if fault == "buffered-empty-buffer":
                return bytearray()
            if fault == "buffered-readonly-buffer":
                return b"\0" * 100
            if fault == "buffered-not-a-buffer":
                return 123
            if fault == "buffered-list-buffer":
                return [0] * 100
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            events.append(("data", bytes(self.buf[:nbytes])))
            if fault == "buffered-buffer_updated-raises":
                raise Boom("updated")

        def eof_received(self) -> Any:
            events.append("eof")
            if fault == "eof_received":
                raise Boom("eof")
            if fault == "eof_received-returns-str":
                return "yes"
            return None

        def connection_lost(self, exc: BaseException | None) -> None:
            events.append(("lost", type(exc).__name__ if exc else None))
            if fault == "connection_lost":
                raise Boom("lost")

        def pause_writing(self) -> None:
            if fault == "pause_writing":
                raise Boom("pause")

    return P()


FAULTS = ["connection_made", "data_received", "eof_received", "eof_received-returns-str",
          "connection_lost", "pause_writing", "buffered-get_buffer-raises",
          "buffered-empty-buffer", "buffered-readonly-buffer", "buffered-not-a-buffer", "buffered-list-buffer",
          "buffered-buffer_updated-raises"]


def observe(factory: Any, fault: str) -> dict[str, Any]:
    loop = factory()
    seen: list[tuple[str, str]] = []
    # Messages name the transport class and may include its repr: masked.
    loop.set_exception_handler(lambda lp, ctx: seen.append(
        (re.sub(r"\(<.*", "(<transport>)", str(ctx.get("message")))
         .replace("UringSocketTransport", "T").replace("_SelectorSocketTransport", "T"),
         type(ctx.get("exception")).__name__)))
    events: list[Any] = []

    async def main() -> bool:
        a, b = socket.socketpair()
        b.setblocking(False)
        try:
            tr, _ = await loop.connect_accepted_socket(lambda: make_protocol(fault, events), a)
            tr.set_write_buffer_limits(high=1)
            await loop.sock_sendall(b, b"hello")
            for _ in range(20):
                await asyncio.sleep(0)
            if not tr.is_closing():
                tr.write(b"x" * 100_000)   # pause_writing
            b.shutdown(socket.SHUT_WR)
            for _ in range(20):
                await asyncio.sleep(0)
            tr.close()
            await quiesce(loop, 20)
        finally:
            b.close()
        # still usable
        c, d = socket.socketpair()
        c.setblocking(False)
        d.setblocking(False)
        with c, d:
            await loop.sock_sendall(c, b"ping")
            return await asyncio.wait_for(loop.sock_recv(d, 4), GUARD) == b"ping"

    try:
        usable = loop.run_until_complete(main())
        if isinstance(loop, uringloop.Loop):
            st = loop.statistics()
            assert st.ops_in_flight == 1 and st.buffers_lent == 0, st
    finally:
        loop.close()
    return {"events": events, "handler": seen, "usable": usable}


@pytest.mark.parametrize("fault", FAULTS)
def test_misbehaving_protocol_matches_stock(fault: str) -> None:
    expected = observe(asyncio.SelectorEventLoop, fault)
    actual = observe(uringloop.Loop, fault)
    assert expected["usable"] is True
    assert actual == expected
