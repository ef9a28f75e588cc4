"""A peer's EOF reaches the protocol in the same loop iteration as on stock asyncio.

Found with `python -m uringloop run` on Python 3.11 (tests/integrations/test_run_cli.py):
an ordinary echo program, whose server handler was still waiting for EOF when
asyncio.run() returned, had that handler cancelled -- and 3.11's
StreamReaderProtocol done-callback then logs "Exception in callback ...
CancelledError" -- on uringloop, never on stock asyncio.  From the client's
``writer.close()``, the server handler saw EOF after 3 loop iterations on stock
asyncio and after 4 on uringloop, every time.

Cause (fixed): uringloop/_stream.py, ``_on_recv``, the ``res == 0`` branch, deferred EOF
with ``call_soon(self._eof_ready)`` -- always.  The comment says this copies stock
asyncio, where a read returning b"" is a callback of its own; but on stock the
EOF is seen in the iteration whose poll reports it, like data, and is one
iteration later only when data came first (its own read).  uringloop delivers data
in the iteration whose completion carries it, and EOF one later even when no
data came before it.  The fix (``_kernel_eof``): defer EOF only when this transport
delivered data in the same iteration.

The test: the peer sends a byte, or closes; the number of loop iterations until
the protocol hears of it must be the same for both, as on stock asyncio.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

import uringloop


async def iterations_until_heard(what: str) -> int:
    a, b = socket.socketpair()
    heard: list[str] = []

    class Listener(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            heard.append("data")

        def eof_received(self) -> None:
            heard.append("eof")

    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(Listener, a)
    try:
        await asyncio.sleep(0.05)              # reading
        if what == "data":
            b.send(b"x")
        else:
            b.close()
        for n in range(1, 20):
            await asyncio.sleep(0)
            if heard:
                assert heard == [what]
                return n
        raise AssertionError(f"{what} never heard")
    finally:
        transport.close()
        b.close()
        await asyncio.sleep(0)


def new_asyncio() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop()


@pytest.mark.parametrize("factory", [
    new_asyncio,
    uringloop.new_event_loop,
], ids=["asyncio", "uringloop"])
def test_eof_is_heard_as_soon_as_data_would_be(
        factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=factory) as runner:
        data = runner.run(iterations_until_heard("data"))
        eof = runner.run(iterations_until_heard("eof"))
    assert eof == data
