"""Ring-native datagram transport for UDP (AF_INET, AF_INET6) sockets.

Reading: one multishot IORING_OP_RECVMSG per transport stays armed, with
buffer select from the loop's datagram buffer group
(``_proactor.DGRAM_BUF_GROUP``).  Each completion carries a buffer holding
``struct io_uring_recvmsg_out`` (namelen, controllen, payloadlen, flags), then
the sender's sockaddr (``DGRAM_HEADROOM`` leaves room for a sockaddr_storage),
then the payload.  The payload goes straight to ``protocol.datagram_received``
with the address decoded into the tuple ``socket.recvfrom`` gives; the buffer
goes back to the kernel at the next iteration.  No poll, no recvfrom syscall,
no call_soon per datagram.

A negative completion (an ICMP error on a connected socket: ECONNREFUSED ...)
ends the multishot; it goes to ``protocol.error_received`` as stock asyncio's
``recvfrom`` exception would, and the receive is re-armed.  ENOBUFS (all
buffers lent) and ECANCELED only re-arm.  Buffers hold the largest UDP payload
(65527 bytes), so a datagram is never truncated where stock's
``recvfrom(256 KiB)`` would not truncate it either.  Unix datagram sockets,
whose datagrams may be larger, keep CPython's transport (see ``_unix.py``).

Reading can be paused (stock's datagram transport inherits pause_reading and
resume_reading from ``_SelectorTransport``): pausing cancels the receive, and
datagrams (or errors) that complete before the cancel lands are kept, in
order, and delivered after resume_reading(), before anything newer.

Writing is CPython's own ``_SelectorDatagramTransport.sendto`` (inherited):
try ``sock.send``/``sock.sendto`` at once; on EAGAIN buffer and flush when a
ring poll says the socket is writable; write-buffer flow control and
error_received on send errors exactly as stock, version for version.
"""

from __future__ import annotations

import collections
import errno
import logging
import socket
import struct
from asyncio import selector_events
from typing import Any

from . import _ring
from ._proactor import DGRAM_BUF_GROUP, DGRAM_HEADROOM, CallbackOp, Proactor, os_error
from ._ring import ffi, lib

logger = logging.getLogger("asyncio")

_SelectorDatagramTransport: Any = \
    selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]

_F_BUFFER = _ring.CQE_F_BUFFER
_F_MORE = _ring.CQE_F_MORE
_OP_RECVMSG = _ring.OP_RECVMSG
_IOSQE_BUFFER_SELECT = 1 << 5
_IORING_RECV_MULTISHOT = 1 << 1
_ECANCELED = -errno.ECANCELED
_ENOBUFS = -errno.ENOBUFS
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6

# struct msghdr (LP64): msg_name 0, msg_namelen 8, msg_iov 16, msg_iovlen 24,
# msg_control 32, msg_controllen 40, msg_flags 48.  For a multishot recvmsg
# only msg_namelen and msg_controllen matter: the room reserved in each buffer.
_MSGHDR_SIZE = 56
_NAME_ROOM = DGRAM_HEADROOM - 16
_HEAD = 16 + 28                       # recvmsg_out + the largest inet sockaddr
_RECVMSG_OUT = struct.Struct("=IIII")
_unpack = ffi.unpack
_unpack_out = _RECVMSG_OUT.unpack_from
_ADDR_CACHE_MAX = 1024

# Decoded sender addresses, by their raw sockaddr bytes (shared: the mapping is
# a pure function of the bytes).  Cleared when it grows past _ADDR_CACHE_MAX.
_addr_cache: dict[bytes, Any] = {}


def decode_sockaddr(raw: bytes) -> Any:
    """The address tuple ``socket.recvfrom`` returns for a raw sockaddr_in/in6."""
    if not raw:
        return None
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == _AF_INET:
        return (socket.inet_ntop(_AF_INET, raw[4:8]), port)
    if family == _AF_INET6:
        flowinfo = int.from_bytes(raw[4:8], "big")
        host = socket.inet_ntop(_AF_INET6, raw[8:24])
        scope_id = int.from_bytes(raw[24:28], "little")
        if scope_id:
            # CPython formats with getnameinfo(NI_NUMERICHOST): "fe80::1%eth0".
            host = socket.getnameinfo((host, port, flowinfo, scope_id),
                                      socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
        return (host, port, flowinfo, scope_id)
    raise ValueError(f"unexpected address family {family}")


def supports(sock: socket.socket, proactor: Proactor) -> bool:
    """Whether sock can use the ring transport on this loop."""
    if sock.family not in (_AF_INET, _AF_INET6) or sock.type != socket.SOCK_DGRAM:
        return False
    try:
        return proactor.ensure_dgram_bufring()
    except OSError as exc:
        # No memory for the buffer group (e.g. RLIMIT_MEMLOCK on old kernels):
        # CPython's transport over ring polls still works.
        logger.debug("uringloop: no datagram buffer ring (%s); using polls", exc)
        return False


class UringDatagramTransport(_SelectorDatagramTransport):  # type: ignore[misc]
    """UDP transport whose receive is one multishot recvmsg on the ring.

    Everything but reading is CPython's ``_SelectorDatagramTransport``
    (sending, flow control, closing, extra info), so stock semantics hold.

    Ownership: the transport owns its socket.  The recvmsg op holds the socket
    object and the msghdr it names until its final completion; the kernel
    owns a provided buffer from the moment it picks it until its completion
    is handled, after which the buffer id is queued on the proactor's
    ``dgram_recycle`` list and handed back to the kernel at the next
    iteration (the payload is copied out first).  The socket is closed only in
    ``_call_connection_lost``, after the SQ has been flushed when a receive is
    armed, so no unsubmitted SQE can name a reused fd; a submitted op holds
    the kernel's own reference to the file, and close()/abort() cancel it.
    """

    def __init__(self, loop: Any, sock: socket.socket, protocol: Any, address: Any = None,
                 waiter: Any = None, extra: Any = None) -> None:
        proactor: Proactor = loop._proactor
        self._proactor = proactor
        self._recv_op: CallbackOp | None = None
        self._stash: collections.deque[tuple[bytes | None, Any]] = collections.deque()
        self._drain_scheduled = False
        proactor.ensure_dgram_bufring()
        self._buf_ptrs = proactor.dgram_buf_ptrs      # stable list objects, cached
        self._recycle = proactor.dgram_recycle        # for the receive hot path
        self._payload_ptrs = [p + DGRAM_HEADROOM for p in self._buf_ptrs]
        self._msghdr = ffi.new("char[]", _MSGHDR_SIZE)
        struct.pack_into("=I", ffi.buffer(self._msghdr), 8, _NAME_ROOM)
        # Schedules connection_made, then _add_reader (our _start_reading).
        super().__init__(loop, sock, protocol, address, waiter, extra)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            info.append("read=polling" if self._recv_op is not None else "read=idle")
            watch = self._loop._watches.get(self._sock_fd)
            writing = watch is not None and watch.writer is not None
            info.append(f"write=<{'polling' if writing else 'idle'}, "
                        f"bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    # -- reading ------------------------------------------------------------------

    def _add_reader(self, fd: int, callback: Any, *args: Any) -> None:
        # CPython's __init__ schedules this after connection_made(): start reading.
        self._start_reading()

    def _start_reading(self) -> None:
        if self._recv_op is None and self.is_reading() and not self._conn_lost:
            self._arm_recv()

    def _arm_recv(self) -> None:
        proactor = self._proactor
        op = CallbackOp(self._on_recv, (self._sock, self._msghdr), multishot=True)
        ud = proactor.register(op)
        ret = lib.ul_prep_ext(proactor._ptr, _OP_RECVMSG, self._sock_fd, self._msghdr,
                              1, 0, 0, 0, 0, DGRAM_BUF_GROUP, _IOSQE_BUFFER_SELECT,
                              _IORING_RECV_MULTISHOT, ud)
        proactor.submit_prepared(op, ret)
        self._recv_op = op

    def _stop_reading(self) -> None:
        op = self._recv_op
        if op is not None:
            self._proactor.cancel(op.ud)

    def _on_recv(self, res: int, flags: int) -> None:
        if flags & _F_BUFFER:
            bid = flags >> 16
            head = _unpack(self._buf_ptrs[bid], _HEAD)
            namelen, _controllen, _payloadlen, _mflags = _unpack_out(head)
            # What the buffer holds of the payload; a longer _payloadlen means
            # MSG_TRUNC: deliver what fits, as recvfrom(max_size) would.
            data = _unpack(self._payload_ptrs[bid], res - DGRAM_HEADROOM)
            self._recycle.append(bid)
            raw = head[16:16 + namelen]
            addr = _addr_cache.get(raw)
            if addr is None:
                addr = decode_sockaddr(raw)
                if len(_addr_cache) >= _ADDR_CACHE_MAX:
                    _addr_cache.clear()
                _addr_cache[raw] = addr
            if not flags & _F_MORE:
                self._recv_op = None
                self._start_reading()
            if self._closing:
                return   # as stock: nothing is read after close()
            if self._paused or self._stash:
                self._stash.append((data, addr))
                return
            try:   # _deliver(), inlined on the hot path
                self._protocol.datagram_received(data, addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001 - reported, as stock
                self._report(exc)
            return
        if not flags & _F_MORE:
            self._recv_op = None
            self._start_reading()   # re-armed first: the protocol may raise
        if res < 0 and res != _ECANCELED and res != _ENOBUFS and not self._closing:
            # e.g. ECONNREFUSED from an ICMP port unreachable: stock's recvfrom
            # raises it and the protocol's error_received gets it.
            err = os_error(res)
            if self._paused or self._stash:
                self._stash.append((None, err))
            else:
                self._deliver(None, err)

    def _deliver(self, data: bytes | None, addr: Any) -> None:
        try:
            if data is None:
                self._protocol.error_received(addr)
            else:
                self._protocol.datagram_received(data, addr)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - reported, as stock
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        # Stock: the exception leaves the reader callback, and the loop
        # reports it; the transport stays open.
        self._loop.call_exception_handler({
            "message": f"Exception in callback {type(self).__name__}._read_ready()",
            "exception": exc,
            "transport": self,
            "protocol": self._protocol,
        })

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
        if self._stash:
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._loop.call_soon(self._drain_stash)
        else:
            self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _drain_stash(self) -> None:
        """Deliver what completed while paused, oldest first, then read on."""
        self._drain_scheduled = False
        stash = self._stash
        while stash and not self._paused and not self._closing:
            data, addr = stash.popleft()
            self._deliver(data, addr)
        if not stash:
            self._start_reading()

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        if self._closing:
            return
        self._stop_reading()
        self._stash.clear()
        super().close()

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._stop_reading()
        self._stash.clear()
        super()._force_close(exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._recv_op is not None:
            # Submit the receive (and its cancel) before the fd number is
            # released: then the kernel holds the file itself.
            self._proactor.flush()
        super()._call_connection_lost(exc)
