"""Hot reads: a plain Protocol's transport moving between the multishot receive
(small messages) and readiness + recv() into one hot buffer (large messages);
speedups.c, "Hot reads", has the rule and the measurements.

The oracle tests run on stock asyncio and on uringloop with the default
thresholds: what the protocol sees across the switches (bytes, order, chunk
sizes, EOF, set_protocol) must be stock's.  test_body_with_hot_flipping runs
the transport and stream test bodies of the other modules on uringloop with
HOT_MIN = 1 byte and HOT_LEAVE = 1 GiB, so every transport goes hot after two
completions and back after eight readiness events, over and over: each switch
races with the data, pauses, EOFs, resets and errors those tests drive.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from typing import Any, Callable, Iterator

import pytest
import test_streams
import test_transport
from netutil import RecordingProtocol, is_uringloop, pattern, read_all_sock

import uringloop
from uringloop import _stream

pytestmark = pytest.mark.timeout(120)

STOCK_MAX_READ = 256 * 1024   # selector_events._SelectorSocketTransport.max_size


@pytest.fixture
def switches(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the transports' actual switches into and out of the hot mode."""
    counts = {"enter": 0, "leave": 0}
    cls = _stream.UringSocketTransport
    enter, leave = cls._enter_hot, cls._leave_hot

    def counting_enter(self: Any) -> None:
        was = self._hot
        enter(self)
        counts["enter"] += self._hot and not was

    def counting_leave(self: Any) -> None:
        was = self._hot
        leave(self)
        counts["leave"] += was and not self._hot

    monkeypatch.setattr(cls, "_enter_hot", counting_enter)
    monkeypatch.setattr(cls, "_leave_hot", counting_leave)
    yield counts


class EchoRecorder(asyncio.Protocol):
    """Echoes every chunk and records the chunk sizes."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.transport: Any = None
        self.eof = 0
        self.lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.eof == 0, "data after eof_received()"
        self.chunks.append(len(data))
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


async def echo_pair() -> tuple[Any, EchoRecorder, socket.socket]:
    transport, proto, peer = await test_transport.transport_on(EchoRecorder)
    return transport, proto, peer


@pytest.mark.asyncio
async def test_large_small_large_messages_echo_in_order(switches: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    transport, proto, peer = await echo_pair()
    phases = [(100 * 1024, 12), (1024, 40), (64 * 1024, 12), (300, 40)]
    with peer:
        for seed, (size, count) in enumerate(phases):
            for i in range(count):
                msg = pattern(size, seed=seed * 1000 + i)
                await loop.sock_sendall(peer, msg)
                assert await read_all_sock(peer, size) == msg, (size, i)
            if is_uringloop():
                # large messages go hot, a run of small ones goes back
                assert transport._hot is (size >= 64 * 1024), (size, switches)
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        assert proto.eof == 1
    assert sum(proto.chunks) == sum(size * count for size, count in phases)
    assert max(proto.chunks) <= STOCK_MAX_READ
    if is_uringloop():
        assert switches == {"enter": 2, "leave": 2}


@pytest.mark.asyncio
async def test_bulk_stream_then_eof_while_hot(switches: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    transport, proto, peer = await test_transport.transport_on(RecordingProtocol)
    data = pattern(8 * 1024 * 1024, seed=3)
    with peer:
        await loop.sock_sendall(peer, data)
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
    assert bytes(proto.data) == data
    assert proto.events == ["made", "data", "eof", "lost"]
    if is_uringloop():
        assert switches["enter"] == 1



@pytest.mark.asyncio
@pytest.mark.parametrize("buffered", [False, True])
async def test_eof_delivered_once_after_bulk_while_reading_on_readiness(buffered: bool) -> None:
    """A transport reading on readiness (hot, or a BufferedProtocol) whose read
    finds EOF may have more readiness completions of the same poll already
    harvested: they must not read, and deliver EOF, again.  The protocol keeps
    the transport open after EOF, so a second delivery would show."""
    loop = asyncio.get_running_loop()
    data = pattern(512 * 1024, seed=11)

    class Buffered(RecordingProtocol, asyncio.BufferedProtocol):
        def get_buffer(self, sizehint: int) -> bytearray:
            self.buf = bytearray(65536)
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.data_received(bytes(self.buf[:nbytes]))

    factory = Buffered if buffered else RecordingProtocol

    async def one() -> None:
        transport, proto, peer = await test_transport.transport_on(
            lambda: factory(eof_keep_open=True))
        with peer:
            await loop.sock_sendall(peer, data)
            peer.shutdown(socket.SHUT_WR)
            await proto.eof
            for _ in range(5):
                await asyncio.sleep(0)
            assert bytes(proto.data) == data
            assert proto.events == ["made", "data", "eof"]
            transport.close()
            assert await proto.lost is None

    for _ in range(3):
        await asyncio.gather(*(one() for _ in range(8)))


class Keeper(RecordingProtocol):
    """Records as RecordingProtocol, and keeps every ``keep_every``-th data
    object as given (no copy), with the offset it came at; checks each one's
    hash against a fresh copy's."""

    def __init__(self, keep_every: int, echo: bool = False) -> None:
        super().__init__()
        self.keep_every = keep_every
        self.echo = echo
        self.kept: list[tuple[int, bytes]] = []
        self.sizes: list[int] = []
        self.bad_hashes = 0

    @property
    def received(self) -> int:
        return len(self.data)

    def data_received(self, data: bytes) -> None:
        if hash(data) != hash(bytes(bytearray(data))):   # a stale cached hash shows here
            self.bad_hashes += 1
        if len(self.sizes) % self.keep_every == 0:
            self.kept.append((self.received, data))
        self.sizes.append(len(data))
        super().data_received(data)
        if self.echo:
            self.transport.write(data)

    def check_kept(self, sent: bytes | bytearray) -> None:
        """All of ``sent`` arrived, no hash was stale, every kept object is
        still the bytes it was given."""
        assert self.received == len(sent)
        assert self.bad_hashes == 0
        for offset, chunk in self.kept:
            assert chunk == sent[offset:offset + len(chunk)], (offset, len(chunk))


@pytest.mark.asyncio
@pytest.mark.parametrize("keep_every", [1, 3, 1000000])
async def test_data_objects_a_protocol_keeps_stay_intact(keep_every: int) -> None:
    """Large hot reads hand the protocol the read buffer's own bytes object
    and take it back as the next read's buffer only if the protocol let go of
    it (speedups.c, hot_read): a kept object must never change, and no
    object may carry a stale cached hash.  keep_every: 1 keeps all, 3 keeps
    some (the buffer goes back and forth), 1000000 only the first."""
    loop = asyncio.get_running_loop()
    transport, proto, peer = await test_transport.transport_on(lambda: Keeper(keep_every))
    data = pattern(24 * 1024 * 1024, seed=17)
    with peer:
        view = memoryview(data)
        rng = random.Random(keep_every)
        while view:
            n = rng.choice([70_000, 100_000, 200_000, 300_000, 1_000_000])
            await loop.sock_sendall(peer, view[:n])
            view = view[n:]
            await asyncio.sleep(0)
        peer.shutdown(socket.SHUT_WR)
        while proto.received < len(data):
            await asyncio.sleep(0.01)
        transport.close()
        assert await proto.lost is None
    proto.check_kept(data)
    assert max(proto.sizes) <= STOCK_MAX_READ
    # reads large enough to be handed over did happen (on both loops)
    assert sum(size >= 64 * 1024 for size in proto.sizes) >= 8, proto.sizes[:50]


@pytest.mark.asyncio
@pytest.mark.parametrize("keep_every", [1, 3, 1000000])
async def test_small_messages_a_protocol_keeps_stay_intact(keep_every: int) -> None:
    """The multishot receive's bytes objects: one the protocol let go of is
    reused for a later message of a size it holds (speedups.c, msg_bytes); a
    kept one must never change, and none may carry a stale cached hash.
    Message by message (echoed back before the next), sizes on both sides of
    the reuse rules: under 480 bytes, and within or beyond half and twice the
    size of the one before."""
    loop = asyncio.get_running_loop()
    transport, proto, peer = await test_transport.transport_on(lambda: Keeper(keep_every, True))
    rng = random.Random(keep_every)
    sent = bytearray()
    source = pattern(64 * 1024, seed=23)
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with peer:
        for i in range(600):
            size = rng.choice([100, 479, 480, 1000, 1024, 1500, 2000, 4096, 8000, 30000])
            start = rng.randrange(len(source) - size)
            msg = source[start:start + size]
            sent += msg
            await loop.sock_sendall(peer, msg)
            assert await read_all_sock(peer, size) == msg, (i, size)
        transport.close()
        assert await proto.lost is None
    proto.check_kept(sent)


class Switcher(asyncio.Protocol):
    """Plain -> BufferedProtocol -> plain, each after ``step`` bytes."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.parts: list[bytearray] = [bytearray()]
        self.transport: Any = None
        self.lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parts[-1] += data
        if len(self.parts) == 1 and len(self.parts[0]) >= self.step:
            self.parts.append(bytearray())
            self.transport.set_protocol(_SwitcherBuffered(self))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


class _SwitcherBuffered(asyncio.BufferedProtocol):
    def __init__(self, owner: Switcher) -> None:
        self.owner = owner
        self.buf = bytearray(50_000)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        owner = self.owner
        owner.parts[-1] += self.buf[:nbytes]
        if len(owner.parts[-1]) >= owner.step:
            owner.parts.append(bytearray())
            owner.transport.set_protocol(owner)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.owner.connection_lost(exc)


@pytest.mark.asyncio
async def test_set_protocol_while_hot(switches: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    transport, proto, peer = await test_transport.transport_on(lambda: Switcher(1024 * 1024))
    data = pattern(4 * 1024 * 1024, seed=9)
    with peer:
        await loop.sock_sendall(peer, data)
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
    assert len(proto.parts) == 3
    assert b"".join(proto.parts) == data
    if is_uringloop():
        assert switches["enter"] >= 1


# -- every transport flipping between the two modes ------------------------------------------


def _bulk_protocol_echo() -> Any:
    """1 MiB each way through an echoing transport: switches mid-stream."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        transport, proto, peer = await echo_pair()
        data = pattern(1024 * 1024, seed=5)
        with peer:
            sender = loop.create_task(loop.sock_sendall(peer, data))
            got = await read_all_sock(peer, len(data))
            await sender
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return body()


def _round_trips() -> Any:
    """300 request/response round trips of 1 byte to 300 KiB: each its own
    readiness event, so the transport switches every few messages."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        transport, proto, peer = await echo_pair()
        rng = random.Random(7)
        with peer:
            for i in range(300):
                msg = pattern(rng.choice([1, 100, 1024, 40_000, 300_000]), seed=i)
                await loop.sock_sendall(peer, msg)
                assert await read_all_sock(peer, len(msg)) == msg, i
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
        assert max(proto.chunks) <= STOCK_MAX_READ
    return body()


BODIES: dict[str, Callable[[], Any]] = {
    "callbacks": test_transport.test_protocol_callbacks_in_order,
    "raising": test_transport.test_data_received_raising_is_fatal,
    "pause-resume": lambda: test_transport.test_pause_resume_reading_under_load("Protocol"),
    "eof-while-paused": test_transport.test_eof_while_paused_waits_for_resume,
    "write-eof-keep-reading": test_transport.test_write_eof_then_keep_reading,
    "half-close": test_transport.test_half_close_between_two_transports,
    "close-flushes": test_transport.test_close_flushes_pending_data,
    "nothing-after-close": test_transport.test_nothing_delivered_after_close_with_pending_writes,
    "abort": test_transport.test_abort_discards_pending_data,
    "reset-reading": test_transport.test_peer_reset_while_reading,
    "reset-while-paused": test_transport.test_reset_while_paused_is_reported_on_resume,
    "set-protocol": test_transport.test_set_protocol_switches_delivery,
    "set-protocol-in-buffer-updated": test_transport.test_set_protocol_inside_buffer_updated,
    "unix-half-close": test_transport.test_unix_transport_half_close,
    "streams-at-eof": test_streams.test_readline_readexactly_readuntil_at_eof,
    "streams-drain": test_streams.test_drain_waits_for_slow_reader,
    "streams-reset": test_streams.test_reset_surfaces_as_connection_error,
    "streams-cancelled-read": test_streams.test_stream_reader_cancelled_read_loses_nothing,
    "echo-1mib": _bulk_protocol_echo,
    "round-trips": _round_trips,
}


def flip_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stream, "HOT_MIN", 1)
    monkeypatch.setattr(_stream, "HOT_LEAVE", 1 << 30)


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("path", ["c", "python"])
def test_body_with_hot_flipping(name: str, path: str, monkeypatch: pytest.MonkeyPatch,
                                switches: dict[str, int]) -> None:
    """``path`` "python": every readiness completion goes to the transport's
    Python reference (_on_readable / _read_ready) instead of the C ReadableHook;
    it does not count small reads, so there the transports only go hot."""
    flip_always(monkeypatch)
    if path == "python":
        monkeypatch.setattr(_stream, "_ReadableHook", lambda t, px, slow, leave: slow)
    contexts: list[dict[str, Any]] = []
    loop = uringloop.Loop()
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    try:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(BODIES[name]())
        assert loop.statistics().ops_in_flight == 0
    finally:
        if not loop.is_closed():
            loop.close()
    assert not contexts, contexts


def test_flipping_switches_both_ways(monkeypatch: pytest.MonkeyPatch,
                                     switches: dict[str, int]) -> None:
    """The flipping runs above do switch: both ways, many times."""
    flip_always(monkeypatch)
    with asyncio.Runner(loop_factory=uringloop.Loop) as runner:
        runner.run(_round_trips())
    assert switches["enter"] > 10 and switches["leave"] > 10, switches


@pytest.mark.parametrize("hot_min", [0, 1])
def test_hot_min_zero_never_switches(hot_min: int, monkeypatch: pytest.MonkeyPatch,
                                     switches: dict[str, int]) -> None:
    monkeypatch.setattr(_stream, "HOT_MIN", hot_min)
    with asyncio.Runner(loop_factory=uringloop.Loop) as runner:
        runner.run(_bulk_protocol_echo())
    assert (switches["enter"] > 0) is bool(hot_min), switches


@pytest.mark.asyncio
async def test_aiohttp_keepalive_alternating_large_and_small(switches: dict[str, int]) -> None:
    """One keep-alive connection, large uploads and small requests in turn:
    aiohttp's server and client transports go hot and back every round."""
    pytest.importorskip("aiohttp", reason="aiohttp is not installed (test extra)")
    import aiohttp
    import test_aiohttp

    runner, base = await test_aiohttp._serve(set())
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(12):
                body = pattern(300_000 + 1000 * i, seed=i)
                async with session.post(f"{base}/echo", data=body) as r:
                    assert await r.read() == body, i
                for j in range(10):
                    async with session.get(f"{base}/hello", params={"name": str(j)}) as r:
                        assert await r.text() == f"hello {j}"
    finally:
        await runner.cleanup()
    if is_uringloop():
        # both ends of the connection, every round (a margin for a round
        # whose upload arrives in pieces too small to count)
        assert switches["enter"] >= 12 and switches["leave"] >= 12, switches
