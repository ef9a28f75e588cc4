"""Ring-native stream transport for TCP and Unix sockets.

Reading: one multishot receive (IORING_OP_RECV with IORING_RECV_MULTISHOT and
a provided-buffer group) stays armed per connection.  Each completion carries
a buffer id; its bytes go straight to ``protocol.data_received`` (or are
copied into a BufferedProtocol's buffer) and the buffer goes back to the
kernel at the next iteration.  No Future, no call_soon per chunk.  A
completion without IORING_CQE_F_MORE (ENOBUFS, cancellation, EOF, error)
ends the multishot; if reading is still wanted it is re-armed.  Without
multishot support, a single-shot receive into a per-transport buffer is
re-armed after each completion.

Pausing cancels the receive.  Bytes that complete before the cancel lands
are kept, in order, and delivered after resume_reading(), before anything
newer: nothing is lost or reordered.

Writing: at most one send in flight.  ``write()`` starts a send when idle
(submitted with the loop's next io_uring_enter, not by a syscall of its
own); what is written while a send is in flight is appended to one
bytearray and sent as a whole when the send completes.  The kernel reads
only memory the op owns: ``bytes`` as given, anything mutable copied first,
and the coalescing bytearray is swapped out (never mutated) once handed over.

Observable states of the write side (after CPython's proactor transport):
1. IDLE: no send in flight, buffer empty
2. SENDING: a send in flight, buffer empty
3. BACKED UP: a send in flight, buffer not empty

Zero-copy sends: a send of at least ``ZC_THRESHOLD`` bytes (0: never; the
environment variable URINGLOOP_ZC_THRESHOLD overrides it; off with
URINGLOOP_DISABLE=send_zc) goes out as IORING_OP_SEND_ZC.  Its first CQE is
the result and drives the state machine above exactly like a plain send's;
the op stays registered (CQE_F_MORE) and keeps the data alive until the
kernel's notification CQE (CQE_F_NOTIF) says it no longer reads the pages.
Only memory the op owns is sent that way: ``bytes`` or the swapped-out
coalescing buffer, never a caller's mutable buffer.
"""

from __future__ import annotations

import collections
import errno
import logging
import select
import os
import socket
import sys
from asyncio import base_events, constants, futures, protocols, transports, trsock
from typing import Any

from . import _ring
from ._speedups import ReadableHook as _ReadableHook
from ._speedups import RecvHook as _RecvHook
from ._speedups import send as _send
from ._speedups import method as _c_method
from ._speedups import HOT_SIZE as _HOT_SIZE
from ._proactor import BUF_COUNT, BUF_SIZE, BUF_GROUP, CallbackOp, Proactor, os_error
from ._ring import ffi, lib

logger = logging.getLogger("asyncio")

_F_BUFFER = _ring.CQE_F_BUFFER
_F_MORE = _ring.CQE_F_MORE
_F_DATA_MORE = _F_BUFFER | _F_MORE
_unpack = ffi.unpack
_memmove = ffi.memmove
_OP_SEND = _ring.OP_SEND
_OP_RECV = _ring.OP_RECV
_MSG_NOSIGNAL = socket.MSG_NOSIGNAL
_ECANCELED = -errno.ECANCELED
_ENOBUFS = -errno.ENOBUFS
_FALLBACK_RECV_SIZE = 256 * 1024
_POLLIN = select.POLLIN | select.POLLRDHUP
_POLL_END = select.POLLRDHUP | select.POLLHUP | select.POLLERR
_OP_SEND_ZC = _ring.OP_SEND_ZC
_F_NOTIF = _ring.CQE_F_NOTIF
_ZC_COPIED = _ring.NOTIF_USAGE_ZC_COPIED
_EINVAL = -errno.EINVAL


def _zc_threshold_from_env(default: int) -> int:
    raw = os.environ.get("URINGLOOP_ZC_THRESHOLD", "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"URINGLOOP_ZC_THRESHOLD must be an integer (bytes; 0 = off), "
                         f"not {raw!r}") from None
    return max(value, 0)


#: Sends of at least this many bytes use IORING_OP_SEND_ZC; 0 switches zero-copy
#: sends off.  Off by default, opt in with URINGLOOP_ZC_THRESHOLD: measured on
#: loopback (docs/benchmarks.md, "Zero-copy") the kernel copied every SEND_ZC
#: anyway (every notification says so) and zero-copy cost 1.3-2.6x the CPU per
#: MiB of a copying send, at 0.4-0.9x its throughput, 64 KiB to 4 MiB.  Where
#: the NIC can send from user pages (not measurable here) large sends may gain.
#: Read when a transport is created.
ZC_THRESHOLD = _zc_threshold_from_env(0)
#: A plain Protocol's transport whose multishot receive completes with at least
#: this many bytes twice in a row switches to reading on readiness into one hot
#: buffer, and back after a run of readiness events that each read less than
#: HOT_LEAVE bytes (speedups.c, "Hot reads"; HOT_MIN 0 = never).  Read when
#: the receive is armed.
HOT_MIN = 32 * 1024
HOT_LEAVE = 16 * 1024
#: Whether write() still tries a plain sock.send() before a zero-copy send.
#: No: on loopback it is cheaper (the send copies what the kernel would copy
#: anyway), but where zero-copy pays, a first send() would copy the bulk of
#: the payload into an empty socket buffer and leave SEND_ZC only the rest.
ZC_TRY_SEND_FIRST = False
#: Ask the kernel to report in the notification whether it copied (6.2+);
#: switched off for the process the first time a kernel refuses the flag.
_zc_report_usage = True
#: Process-wide counters of zero-copy sends (diagnostics, benchmarks, tests).
zc_stats = {"sends": 0, "notifications": 0, "copied": 0}


def _writable(buf: Any) -> memoryview:
    """memoryview(buf), or the TypeError stock's recv_into(buf) raises for a
    buffer it cannot write (read-only, or not a buffer at all)."""
    try:
        view = memoryview(buf)
    except TypeError:
        view = None
    if view is None or view.readonly:
        raise TypeError(f"recv_into() argument 'buffer' must be read-write "
                        f"bytes-like object, not {type(buf).__name__}")
    return view


def _set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on every TCP stream socket, as stock asyncio intends.

    asyncio.base_events._set_nodelay() only acts when ``sock.proto`` is
    IPPROTO_TCP, so a connection accepted from a listener created as
    ``socket(AF_INET, SOCK_STREAM)`` (proto 0) keeps Nagle on under stock
    asyncio.  Our receives deliver at most one 64 KiB provided buffer per
    completion, so an echo of a large message goes out as several writes, and
    with Nagle on the last short segment waits for the peer's delayed ACK
    (measured: 40 ms stalls, 10-20x fewer requests/s at 100 KiB).  uvloop sets
    TCP_NODELAY on every TCP transport too.
    """
    if (sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
            and sock.proto in (0, socket.IPPROTO_TCP)):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass   # e.g. a socket already shut down: nothing to tune


# 3.13+: every attribute of the transport is a slot, so the instance dict
# stays unmade (it is there for what applications store on a transport) and
# CPython specialises ``transport.write(...)`` in a protocol; see
# uringloop._loop._ALL_SLOTS_LOOP for why not on 3.11 and 3.12.
_ALL_SLOTS_TRANSPORT: tuple[str, ...] = (
    "_buf_ptrs", "_buffer", "_deliver", "_drain_scheduled", "_multishot", "_proactor",
    "_protocol_connected", "_rbuf", "_recv_op", "_recycle", "_send_data",
    "_send_off", "_server", "_stash_eof",
) if sys.version_info >= (3, 13) else ()


class UringSocketTransport(transports._FlowControlMixin, transports.Transport):
    """Transport over a connected stream socket, driven by ring completions.

    Ownership: the transport owns its socket.  The socket is closed only
    after connection_lost, and only after the SQ has been flushed, so no
    unsubmitted SQE can name a reused fd; ops already submitted hold the
    kernel's own reference to the file.  The recv op holds the socket (and,
    in fallback mode, the receive buffer); the send op holds the socket and
    the data being sent.
    """

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # The attributes the C hot paths (_speedups.RecvHook, the C write()) read
    # per message are slots: fixed offsets, read with one load (see speedups.c,
    # "Slot access").  On 3.13+ so are the rest (see _ALL_SLOTS_TRANSPORT).
    __slots__ = ("_closing", "_paused", "_stash", "_buffered", "_protocol", "_data_batch",
                 "_eof", "_conn_lost", "_send_op", "_zc_min", "_empty_waiter", "_sock",
                 "_sock_fd", "_hot", "_read_eof", "__dict__", "__weakref__") + _ALL_SLOTS_TRANSPORT

    def __init__(self, loop: Any, sock: socket.socket, protocol: Any, waiter: Any = None,
                 extra: dict[str, Any] | None = None, server: Any = None) -> None:
        self._sock = None    # read by __del__ even if __init__ fails
        self._zc_min = 0     # zero-copy sends off (see below)
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._proactor: Proactor = loop._proactor
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._conn_lost = 0
        self._closing = False
        self._paused = False
        self._eof = False            # write_eof() called
        self._read_eof = False       # EOF received
        self._empty_waiter: Any = None
        # read side
        self._recv_op: CallbackOp | None = None
        self._stash: collections.deque[bytes] = collections.deque()
        self._stash_eof = False
        self._drain_scheduled = False
        self._data_batch = -1    # the proactor batch of the last data delivered
        self._hot = False        # a plain Protocol reading on readiness (see _enter_hot)
        self._multishot = self._proactor.ensure_bufring()
        self._buf_ptrs = self._proactor.buf_ptrs   # stable list objects: cached for
        self._recycle = self._proactor.recycle     # the receive hot path
        self._rbuf: Any = None       # fallback receive buffer (cdata over a bytearray)
        # write side
        self._send_op: CallbackOp | None = None
        self._send_data: Any = None
        self._send_off = 0
        self._buffer = bytearray()
        # Zero-copy sends exist for TCP only (AF_UNIX answers EOPNOTSUPP).
        if ZC_THRESHOLD and loop.features.send_zc and sock.family in (
                socket.AF_INET, socket.AF_INET6):
            self._zc_min = ZC_THRESHOLD
        if server is not None:
            server._attach(self) if _ATTACH_TAKES_TRANSPORT else server._attach()
        loop._transports[self._sock_fd] = self
        _set_nodelay(sock)
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)   # only after connection_made()
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None:
            info.append("read=polling" if self._recv_op is not None else "read=idle")
            state = "polling" if self._send_op is not None else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None:
            import warnings
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            server = self._server
            if server is not None:
                server._detach(self) if _ATTACH_TAKES_TRANSPORT else server._detach()

    # -- protocol -------------------------------------------------------------

    def set_protocol(self, protocol: Any) -> None:
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        if self._buffered:
            self._deliver = self._deliver_buffered
        else:
            self._deliver = self._deliver_data
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self) -> Any:
        return self._protocol

    is_closing = _c_method("is_closing")   # return self._closing, in C

    # -- reading ------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._closing and not self._paused

    def _want_read(self) -> bool:
        return (not self._closing and not self._paused and not self._read_eof
                and not self._conn_lost)

    def _start_reading(self) -> None:
        if self._want_read() and self._recv_op is None and not self._stash:
            self._arm_recv()

    def _arm_recv(self) -> None:
        proactor = self._proactor
        if (self._buffered or self._hot) and proactor.ring.features.poll_multishot:
            # BufferedProtocol: wait for readiness, then recv_into() the
            # protocol's own buffer; a "hot" plain Protocol: wait for
            # readiness, then recv() (see _on_readable and _enter_hot).
            # The common cases in C; the rest goes to _on_readable / _read_ready.
            op = CallbackOp(_ReadableHook(self, proactor, self._on_readable, HOT_LEAVE),
                            self._sock, multishot=True)
            ud = proactor.register(op)
            ret = lib.ul_prep_poll(proactor._ptr, self._sock_fd, _POLLIN, 1, ud)
        elif self._multishot:
            if self._buffered:
                callback = self._on_recv
            else:
                # The data-with-more-to-come case in C; the rest goes to _on_recv.
                hot_min = HOT_MIN if proactor.ring.features.poll_multishot else 0
                callback = _RecvHook(self, proactor, proactor._bufring_addr, self._on_recv,
                                     proactor.buf_base_addr, BUF_SIZE, BUF_COUNT, hot_min)
            op = CallbackOp(callback, self._sock, multishot=True)
            ud = proactor.register(op)
            ret = lib.ul_prep_recv_multishot(proactor._ptr, self._sock_fd, BUF_GROUP, 0, ud)
        else:
            if self._rbuf is None:
                self._rbuf = ffi.from_buffer(bytearray(_FALLBACK_RECV_SIZE))
            op = CallbackOp(self._on_recv, (self._sock, self._rbuf))
            ud = proactor.register(op)
            ret = lib.ul_prep_rw(proactor._ptr, _OP_RECV, self._sock_fd, self._rbuf,
                                 _FALLBACK_RECV_SIZE, 0, 0, ud)
        proactor.submit_prepared(op, ret)
        self._recv_op = op

    def _stop_reading(self) -> None:
        op = self._recv_op
        if op is not None:
            self._proactor.cancel(op.ud)

    def _on_recv(self, res: int, flags: int) -> None:
        # Hot path: a multishot completion with data, delivered at once.
        if (flags & _F_DATA_MORE == _F_DATA_MORE and res > 0
                and not (self._closing or self._paused or self._stash)):
            bid = flags >> 16
            self._recycle.append(bid)   # returned to the kernel next iteration
            self._data_batch = self._proactor._harvested
            if self._buffered:
                self._deliver_ring_buffered(self._buf_ptrs[bid], res)
                return
            data = _unpack(self._buf_ptrs[bid], res)
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
            return
        if flags & _F_BUFFER:
            bid = flags >> 16
            data = ffi.unpack(self._proactor.buf_ptrs[bid], res)
            self._proactor.recycle.append(bid)
        elif res > 0:
            data = ffi.unpack(self._rbuf, res)
        if not flags & _F_MORE:
            self._recv_op = None
        if res > 0:
            if self._closing:
                pass   # close()d or aborted: as stock, nothing is delivered after close()
            elif self._paused or self._stash:
                self._stash.append(data)  # keep order: older bytes first
            else:
                self._data_batch = self._proactor._harvested
                self._deliver(data)
        elif res == 0:
            self._read_eof = True
            if not self._closing:
                self._kernel_eof()
            return
        elif res == _ENOBUFS:
            self._proactor.grow_bufring()   # the ring ran dry: more buffers in it
        elif res != _ECANCELED:
            if not self._closing:
                self._fatal_error(os_error(res), "Fatal read error on socket transport")
            return
        if self._recv_op is None and self._want_read() and not self._stash:
            self._arm_recv()

    def _enter_hot(self) -> None:
        """Called by the C RecvHook after two completions of HOT_MIN bytes or
        more in a row: large messages.  Read them on readiness instead, with
        recv() into one buffer that stays hot in the cache (speedups.c, "Hot
        reads", has the measurements).  The multishot receive is cancelled;
        what it already holds is delivered first, and its final completion
        arms the poll (_on_recv -> _arm_recv).  Nothing is read twice or
        skipped: the bytes it did not take are still in the socket."""
        if not self._hot and not self._buffered and self._recv_op is not None:
            self._hot = True
            self._stop_reading()

    def _leave_hot(self) -> None:
        """Called by the C ReadableHook after a run of small readiness events:
        back to the multishot receive (its final completion re-arms it)."""
        if self._hot:
            self._hot = False
            if not self._buffered:
                self._stop_reading()

    def _on_readable(self, res: int, flags: int) -> None:
        """A multishot POLLIN completion: read into the protocol's buffer.

        The BufferedProtocol receive path.  Readiness, not data, comes from
        the ring, and the bytes go from the socket straight into the buffer
        get_buffer() returns -- one copy, into memory the protocol reuses, as
        stock asyncio's recv_into() path.  (A provided-buffer receive costs a
        second copy, out of a buffer that has gone cold in the ring's
        rotation: measured 25% more CPU per 100 KiB echo.)  Nothing is
        consumed until the protocol is asked for a buffer, so pausing or
        closing never strands received bytes.

        Reads until a short read: the poll is edge-triggered (each arrival
        after the mask in ``res`` was taken posts a completion of its own), so
        a full buffer is followed by another read at once.  Once the mask
        says the peer shut down (RDHUP/HUP/ERR) no arrival will post again:
        read on to EOF, an error or EAGAIN.
        """
        if not flags & _F_MORE:
            self._recv_op = None
        if res < 0:
            if res != _ECANCELED and not self._closing:
                self._fatal_error(os_error(res), "Fatal read error on socket transport")
                return
        elif self._read_ready(res, None):
            return
        if self._recv_op is None and self._want_read() and not self._stash:
            self._arm_recv()

    def _read_ready(self, res: int, buf: Any) -> bool:
        """The read loop of _on_readable; True if it ended the transport's reading
        (EOF or a fatal error).  ``res``: the poll's mask.  ``buf``: a buffer
        get_buffer() already returned for the first read (the C ReadableHook
        hands over what it does not read itself), or None."""
        sock = self._sock
        # Not after EOF: a readiness completion harvested with the one whose
        # read found it would read (and deliver EOF) again.
        while not (self._paused or self._closing or self._stash or self._read_eof):
            if not self._buffered:
                if not self._hot:
                    # set_protocol() switched to a plain Protocol: end the poll;
                    # its final completion re-arms the receive that protocol
                    # gets (nothing has been read, so nothing is stranded).
                    self._stop_reading()
                    break
                # A hot plain Protocol (the C ReadableHook's hot_read).
                try:
                    data = sock.recv(_HOT_SIZE)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal read error on socket transport")
                    return True
                if not data:
                    self._readable_eof()
                    return True
                self._data_batch = self._proactor._harvested
                self._deliver_data(data)
                if len(data) < _HOT_SIZE and not res & _POLL_END:
                    break
                continue
            protocol = self._protocol
            buf = self._get_buffer(protocol, buf)
            if buf is None:
                return True
            t = type(buf)
            if t is memoryview:
                room = buf.nbytes
            elif t is bytearray:
                room = len(buf)
            else:
                try:
                    room = memoryview(buf).nbytes
                except TypeError:
                    room = 0   # recv_into() raises stock's TypeError just below
            try:
                n = sock.recv_into(buf)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                break
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
                return True
            finally:
                buf = None
            if not n:
                self._readable_eof()
                return True
            self._data_batch = self._proactor._harvested
            try:
                protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return True
            if n < room and not res & _POLL_END:
                break   # drained: the next arrival posts a new completion
        return False

    def _get_buffer(self, protocol: Any, buf: Any) -> Any:
        """protocol.get_buffer(-1) (unless ``buf`` is one it already gave),
        checked as stock checks it; None after a fatal error."""
        try:
            if buf is None:
                buf = protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return None
        return buf

    def _readable_eof(self) -> None:
        self._read_eof = True
        self._stop_reading()
        self._kernel_eof()

    def _kernel_eof(self) -> None:
        """EOF as stock asyncio delivers it: in the iteration whose poll shows
        it -- unless this transport delivered data in that iteration: on stock a
        read returning b"" is then a callback of the next iteration."""
        if self._data_batch == self._proactor._harvested:
            self._loop.call_soon(self._eof_ready)
        else:
            self._eof_ready()

    def _deliver_data(self, data: bytes) -> None:
        try:
            self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _deliver_ring_buffered(self, ptr: Any, nbytes: int) -> None:
        """BufferedProtocol hot path: copy straight from the ring buffer.

        One copy (kernel buffer -> protocol buffer) instead of two, when the
        protocol's buffer takes the whole completion; otherwise the general
        piece-by-piece path below, which honours a pause between pieces.
        """
        protocol = self._protocol
        buf = self._get_buffer(protocol, None)
        if buf is None:
            return
        try:
            room = _writable(buf).nbytes
        except TypeError as exc:   # as stock, where recv_into(buf) raises it
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if room < nbytes:
            self._deliver_buffered(_unpack(ptr, nbytes), buf)
            return
        try:
            _memmove(buf, ptr, nbytes)
            protocol.buffer_updated(nbytes)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _deliver_buffered(self, data: bytes, buf: Any = None) -> None:
        # One completion may hold more than the protocol's buffer: feed it piece
        # by piece, and stop as soon as the protocol pauses reading or closes,
        # as stock's recv_into() would (the rest waits, oldest first, in the stash).
        # ``buf``: a buffer get_buffer() already returned for the first piece.
        view = memoryview(data)
        while view:
            buf = self._get_buffer(self._protocol, buf)
            if buf is None:
                return
            try:
                target = _writable(buf).cast("B")
            except TypeError as exc:   # as stock, where recv_into(buf) raises it
                self._fatal_error(exc, "Fatal read error on socket transport")
                return
            try:
                buf = None
                n = min(len(target), len(view))
                target[:n] = view[:n]
                self._protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            view = view[n:]
            if view and (self._paused or self._closing):
                if not self._closing:
                    self._stash.appendleft(bytes(view))
                return
            if view and not self._buffered:
                # buffer_updated() called set_protocol() with a plain Protocol:
                # the rest of this completion is the new protocol's.
                self._deliver_data(bytes(view))
                return

    def _eof_ready(self) -> None:
        if self._closing:
            return
        if self._paused or self._stash:
            self._stash_eof = True
        else:
            self._on_eof()

    def _on_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._stash or self._stash_eof:
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._loop.call_soon(self._drain_stash)
        else:
            self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _drain_stash(self) -> None:
        """Deliver bytes that arrived while paused, oldest first, then resume."""
        self._drain_scheduled = False
        stash = self._stash
        while stash and not self._paused and not self._closing:
            self._deliver(stash.popleft())
        if stash or self._paused or self._closing:
            return
        if self._stash_eof:
            self._stash_eof = False
            self._on_eof()
            return
        self._start_reading()

    # -- writing --------------------------------------------------------------------

    # write(data): in C (_speedups.method("write")) for the common case -- an
    # idle transport whose socket takes the bytes whole -- and otherwise
    # _write_rest(data, None), or _write_rest(data, sent) after the C send.
    write = _c_method("write")

    def _write_rest(self, data: Any, sent: Any) -> None:
        """write()'s general path (and its reference).

        ``sent``: None if nothing was sent yet, else what the C write()'s
        non-blocking send gave: the number of bytes it took, or its OSError.
        """
        if sent is None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            if self._eof:
                raise RuntimeError("Cannot call write() after write_eof()")
            if self._empty_waiter is not None:
                raise RuntimeError("unable to write; sendfile is in progress")
            if not data:
                return
            if self._conn_lost:
                if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                    logger.warning("socket.send() raised exception.")
                self._conn_lost += 1
                return
        if self._send_op is None:
            zc = self._zc_min
            if sent is None and zc and len(data) >= zc and not ZC_TRY_SEND_FIRST \
                    and type(data) is bytes:
                n = 0   # a large immutable payload: straight to a zero-copy send
            else:
                # Idle: try the send now, as CPython's selector transport does.  A
                # complete send needs no op and no completion at all (measured: the
                # cheapest path for request/response traffic), and the write buffer
                # size, hence flow control, means what it means under stock asyncio.
                try:
                    if sent is not None:
                        if isinstance(sent, BaseException):
                            raise sent
                        n = sent
                    elif self._sock is not None:
                        n = _send(self._sock_fd, data)   # 0: the socket buffer is full
                    else:
                        n = self._sock.send(data)  # type: ignore[attr-defined]
                except (BlockingIOError, InterruptedError):
                    n = 0
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal write error on socket transport")
                    return
                finally:
                    sent = None   # no reference cycle through the exception
                if n == len(data):
                    return
            # The rest goes to the ring.  The kernel reads this memory until the
            # send completes: own an immutable copy unless it already is one.
            self._start_send(data if type(data) is bytes else bytes(data), n)
        else:
            self._buffer += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        if self._eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to writelines; sendfile is in progress")
        data = b"".join(list_of_data)
        if data:
            self.write(data)

    def _start_send(self, data: Any, offset: int) -> None:
        proactor = self._proactor
        cdata = ffi.from_buffer(data)
        nbytes = len(data) - offset
        zc = self._zc_min
        if zc and nbytes >= zc:
            # Zero-copy: the op (and ``data``) stays registered until the
            # notification CQE, after the result has moved the state machine on.
            op = CallbackOp(self._on_send_zc, (self._sock, data, cdata), multishot=True)
            ud = proactor.register(op)
            ret = lib.ul_prep_ext(proactor._ptr, _OP_SEND_ZC, self._sock_fd, cdata + offset,
                                  nbytes, 0, _MSG_NOSIGNAL, 0, 0, 0, 0,
                                  _ring.SEND_ZC_REPORT_USAGE if _zc_report_usage else 0, ud)
            zc_stats["sends"] += 1
        else:
            op = CallbackOp(self._on_send, (self._sock, data, cdata))
            ud = proactor.register(op)
            ret = lib.ul_prep_rw(proactor._ptr, _OP_SEND, self._sock_fd, cdata + offset,
                                 nbytes, 0, _MSG_NOSIGNAL, ud)
        proactor.submit_prepared(op, ret)
        self._send_op = op
        self._send_data = data
        self._send_off = offset

    def _on_send_zc(self, res: int, flags: int) -> None:
        global _zc_report_usage
        if flags & _F_NOTIF:
            # The kernel is done with the pages: the op is final and drops ``data``.
            zc_stats["notifications"] += 1
            if res & _ZC_COPIED:
                zc_stats["copied"] += 1
            return
        if (res == _EINVAL and _zc_report_usage and not flags & _F_MORE
                and not self._conn_lost):
            # A kernel without IORING_SEND_ZC_REPORT_USAGE (6.0, 6.1): send again
            # without it; nothing was sent.
            _zc_report_usage = False
            self._send_op = None
            self._start_send(self._send_data, self._send_off)
            return
        self._on_send(res, flags)

    def _on_send(self, res: int, flags: int) -> None:
        self._send_op = None
        if self._conn_lost:
            self._send_data = None
            return   # aborted: whatever happened to the bytes no longer matters
        if res < 0:
            self._send_data = None
            self._buffer.clear()
            exc = os_error(res)
            self._fatal_error(exc, "Fatal write error on socket transport")
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_exception(exc)
            return
        offset = self._send_off + res
        if offset < len(self._send_data):
            self._start_send(self._send_data, offset)
            return
        self._send_data = None
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            self._start_send(data, 0)   # ``data`` is never mutated again
        self._maybe_resume_protocol()   # may write() more
        if self._send_op is None and not self._buffer:
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)  # type: ignore[union-attr]
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on shutdown of socket transport")

    def get_write_buffer_size(self) -> int:
        size = len(self._buffer)
        if self._send_data is not None:
            size += len(self._send_data) - self._send_off
        return size

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if self._send_op is None and not self._buffer:
            self._sock.shutdown(socket.SHUT_WR)  # type: ignore[union-attr]

    def can_write_eof(self) -> bool:
        return True

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._send_op is None and not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        if self._send_op is not None:
            self._proactor.cancel(self._send_op.ud)
        self._buffer.clear()
        self._stash.clear()
        if not self._closing:
            self._closing = True
            self._stop_reading()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._close_socket()
            self._protocol = None
            self._loop = None  # type: ignore[assignment]
            server = self._server
            if server is not None:
                server._detach(self) if _ATTACH_TAKES_TRANSPORT else server._detach()
                self._server = None
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))

    def _close_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        if self._recv_op is not None or self._send_op is not None:
            # Those ops were submitted or are about to be: make sure they are,
            # so the kernel holds the file, before the fd number is released.
            self._proactor.flush()
        sock.close()

    # -- sendfile support (BaseEventLoop.sendfile) ---------------------------------------

    def _make_empty_waiter(self) -> Any:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if self._send_op is None and not self._buffer:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None


def _server_attach_takes_transport() -> bool:
    import inspect
    from asyncio import base_events as be
    return len(inspect.signature(be.Server._attach).parameters) > 1


# Server._attach/_detach gained a transport argument in 3.13 (close_clients()).
_ATTACH_TAKES_TRANSPORT = _server_attach_takes_transport()
