"""The proactor: the in-flight operation table, and one loop iteration's kernel work.

The rules of ownership
======================

An operation is something we asked the kernel to do and it has not finished.
While it is in flight the kernel may read or write memory we named in the SQE
and use the fd we gave it.  Five rules keep that safe:

1. Every operation is keyed by an increasing integer ``user_data``, never by
   ``id()``: ids are reused as soon as an object dies.  ``UD_IGNORE`` (0) is
   reserved for completions nobody waits for (the results of our own cancel
   requests).

2. The operation object (an :class:`Op`) holds strong references to all the
   kernel may touch: the socket or file object (so its fd cannot be closed and
   reused), the buffer (a ``ffi.from_buffer`` export, which also pins a
   bytearray's size), any sockaddr/iovec structs.  The op table
   ``Proactor._ops`` holds the op.

3. Only the final completion removes an op from the table: a single-shot CQE,
   or a multishot CQE without ``IORING_CQE_F_MORE``.  Cancelling the asyncio
   future only *requests* cancellation (IORING_OP_ASYNC_CANCEL); the op stays
   until the kernel says it is done.  Cancellation is best effort: the kernel
   may complete the operation anyway, and :meth:`Op.complete` must then deal
   with a result nobody waits for (close an accepted fd, keep received bytes).

4. Data handed to a send is immutable while in flight: ``bytes`` as is,
   anything mutable is copied first.

5. ``close()`` cancels everything in flight and reaps until the table is
   empty; only then is the ring unmapped.  If the kernel does not finish in
   time, the ops (and their buffers) are kept alive forever rather than freed
   under the kernel.

Lifecycle of an op::

    SUBMITTED --(cancel requested)--> CANCELLING --(final CQE)--> DONE
    SUBMITTED --(final CQE)--> DONE
    multishot: ARMED --(CQE with F_MORE)*--> ARMED --(CQE without F_MORE)--> DONE

This is the shape of CPython's IocpProactor (Lib/asyncio/windows_events.py):
its ``_cache`` is our ``_ops``, its ``_unregister`` our cancel request.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import selectors
import struct
import threading
import time
from typing import Any, Callable

from . import _ring, _speedups
from ._ring import ffi, lib

logger = logging.getLogger("uringloop")

UD_IGNORE = 0

# The provided-buffer group for stream receives: BUF_COUNT buffers of BUF_SIZE
# bytes (virtual memory; pages are touched only as data arrives), of which only
# a window is in the kernel's ring at first: BUF_WINDOW, doubled each time a
# receive finds the ring empty (ENOBUFS), up to all of them.  The ring is
# FIFO, so every buffer in it is filled in turn: a small window keeps the
# memory the kernel copies into hot in the CPU cache (measured: 100 KiB echo,
# kernel copy time per request -20% with 16 buffers in the ring instead of
# 512), while a busy loop with many connections grows it to what it needs.
# 256 KiB buffers take a 100 KiB message in one completion (64 KiB took two:
# two data_received() calls, two sends).
BUF_GROUP = 0
BUF_COUNT = 128
BUF_SIZE = 256 * 1024
BUF_WINDOW = 16
# The provided-buffer group for datagram receives (multishot IORING_OP_RECVMSG,
# see _datagram.py): each buffer holds an io_uring_recvmsg_out header, room for
# a sockaddr_storage and the largest UDP payload (65527 bytes, IPv6).
DGRAM_BUF_GROUP = 1
DGRAM_BUF_COUNT = 64
DGRAM_HEADROOM = 16 + 128
DGRAM_BUF_SIZE = DGRAM_HEADROOM + 65536
_CQE = struct.Struct("=QiI")
_iter_cqes = _CQE.iter_unpack
_CQE_SIZE = _CQE.size
_CQE_F_MORE = _ring.CQE_F_MORE
_iterate = _speedups.iterate
_dispatch = _speedups.dispatch
assert _speedups.CQE_SIZE == _CQE_SIZE

# Graveyard for ops the kernel never finished when their ring closed: their
# buffers must outlive any late kernel write.  Only grows in pathological
# cases (a kernel that ignores cancellation for seconds).
_abandoned: list[Any] = []


def os_error(res: int) -> OSError:
    """OSError for a negative CQE result, with the subclass errno maps to."""
    return OSError(-res, os.strerror(-res))


class Op:
    """An operation in flight.

    Ownership: ``keep`` holds every object the kernel may touch until the
    final completion; subclasses add what their completion needs.
    """

    __slots__ = ("ud", "keep", "cancelling", "multishot", "callback")

    def __init__(self, keep: Any = None, multishot: bool = False) -> None:
        self.ud = 0
        self.keep = keep
        self.cancelling = False
        self.multishot = multishot
        self.callback: Callable[[int, int], None] | None = None  # CallbackOp's shortcut

    def complete(self, res: int, flags: int) -> None:
        """Handle one CQE.  Called for every CQE, final or not."""
        raise NotImplementedError

    def abandon(self) -> None:
        """The ring is closing and this op was cancelled: release waiters."""

    def discard(self, res: int, flags: int) -> None:
        """A CQE reaped while the ring closes: clean up, call nobody back."""


class FutureOp(Op):
    """A single-shot op whose result resolves an asyncio future.

    ``convert(res)`` turns a non-negative result into the future's value;
    ``unwanted(res)`` cleans up a successful result that arrives after the
    future was cancelled (e.g. closes an accepted fd).

    Ownership: as :class:`Op`; the future is resolved at most once.
    """

    __slots__ = ("fut", "convert", "unwanted")

    def __init__(self, fut: asyncio.Future[Any], keep: Any,
                 convert: Callable[[int], Any] | None = None,
                 unwanted: Callable[[int], None] | None = None) -> None:
        Op.__init__(self, keep)
        self.fut = fut
        self.convert = convert
        self.unwanted = unwanted

    def complete(self, res: int, flags: int) -> None:
        fut = self.fut
        if fut.done():
            if res >= 0 and self.unwanted is not None:
                self.unwanted(res)
            return
        if res < 0:
            fut.set_exception(os_error(res))
        elif self.convert is None:
            fut.set_result(res)
        else:
            try:
                value = self.convert(res)
            except BaseException as exc:  # convert may raise, e.g. on a bad address
                fut.set_exception(exc)
            else:
                fut.set_result(value)

    def abandon(self) -> None:
        if not self.fut.done():
            self.fut.cancel()

    def discard(self, res: int, flags: int) -> None:
        self.complete(res, flags)   # the future is done: only `unwanted` runs


class CallbackOp(Op):
    """An op whose completions go straight to ``callback(res, flags)``.

    Used for internal reads (the self-pipe) and for multishot operations that
    feed a transport directly, with no future and no call_soon per CQE.

    Ownership: as :class:`Op`.
    """

    __slots__ = ("on_discard",)

    def __init__(self, callback: Callable[[int, int], None], keep: Any = None,
                 multishot: bool = False,
                 on_discard: Callable[[int, int], None] | None = None) -> None:
        Op.__init__(self, keep, multishot)
        self.callback = callback
        self.on_discard = on_discard

    def complete(self, res: int, flags: int) -> None:
        self.callback(res, flags)

    def discard(self, res: int, flags: int) -> None:
        if self.on_discard is not None:
            self.on_discard(res, flags)


class OpFuture(asyncio.Future[Any]):
    """A future whose cancel() also asks the kernel to cancel its op."""

    _proactor: "Proactor | None" = None
    _op_ud = 0

    def cancel(self, msg: Any = None) -> bool:
        proactor = self._proactor
        if proactor is not None and not self.done():
            proactor.cancel(self._op_ud)
        return super().cancel(msg)


class Proactor:
    """Owns the ring and the op table; does one iteration's kernel work in select()."""

    # What _speedups reads per iteration or per message is in slots (fixed
    # offsets; see speedups.c, "Slot access").
    __slots__ = ("_harvesting", "dgram_recycle", "_ops", "_passive", "_must_enter", "_loop",
                 "recycle", "_sq_dirty", "sleeping", "_addr", "_bufring_addr", "_harvested",
                 "_undispatched", "__dict__", "__weakref__")

    def __init__(self, ring: _ring.Ring, watches: dict[int, Any] | None = None) -> None:
        self.ring = ring
        self._watches = watches if watches is not None else {}
        self._ptr = ring.ptr
        self._addr = int(ffi.cast("uintptr_t", ring.ptr))   # for _speedups
        self._bufring_addr = 0
        self._cqes = ring.cqes
        self._ops: dict[int, Op] = {}
        self._next_ud = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._must_enter = ring.features.defer_taskrun
        # Ops that do not need an enter to make progress while the loop is busy
        # (the self-pipe read): see select().
        self._passive = 0
        self.sleeping = False
        self.closed = False
        self._sq_dirty = False   # SQEs prepared since the last submission
        # CQEs taken off the ring and accounted for in Python, and whether a
        # ul_run() is between its call and that accounting (see _recover_harvest).
        self._harvested: int = ring.stats()["cqes_reaped"]
        self._harvesting = False
        # The provided-buffer ring shared by every multishot receive of this loop,
        # created on first use.  ``recycle`` collects buffer ids handed back by
        # completions; they return to the kernel in one call per iteration.
        self._undispatched: list[bytes] = []   # harvested, not yet dispatched (FIFO)
        self._drain_scheduled = False          # select(): a dispatch is in the ready queue
        # Listening socket -> its accept op's owner (uringloop._network._Acceptor).
        self.acceptors: dict[Any, Any] = {}
        self.bufring: Any = None
        self.buf_ptrs: list[Any] = []
        self.buf_base_addr = 0
        self._spare_bufs: list[int] = []   # stream buffers not yet given to the kernel
        self._grown_at = -1                # the batch (_harvested) of the last growth
        self.recycle: list[int] = []
        # The same for datagram receives (group DGRAM_BUF_GROUP), created on first use.
        self.dgram_bufring: Any = None
        self.dgram_buf_ptrs: list[Any] = []
        self.dgram_recycle: list[int] = []

    def ensure_bufring(self) -> bool:
        """Create the buffer ring if the kernel supports multishot receive."""
        if self.bufring is None:
            if not self.ring.features.recv_multishot or self.closed:
                return False
            self.bufring = self.ring.create_bufring(BUF_GROUP, BUF_COUNT, BUF_SIZE,
                                                    provide=BUF_WINDOW)
            self._spare_bufs = list(range(BUF_COUNT - 1, BUF_WINDOW - 1, -1))
            self._bufring_addr = int(ffi.cast("uintptr_t", self.bufring))
            base = lib.ul_bufring_base(self.bufring)
            self.buf_ptrs = [base + i * BUF_SIZE for i in range(BUF_COUNT)]
            self.buf_base_addr = int(ffi.cast("uintptr_t", base))
        return True

    def ensure_dgram_bufring(self) -> bool:
        """Create the datagram buffer ring if the kernel has multishot receive."""
        if self.dgram_bufring is None:
            features = self.ring.features
            if not (features.recv_multishot and features.buf_ring) or self.closed:
                return False
            self.dgram_bufring = self.ring.create_bufring(
                DGRAM_BUF_GROUP, DGRAM_BUF_COUNT, DGRAM_BUF_SIZE)
            base = lib.ul_bufring_base(self.dgram_bufring)
            self.dgram_buf_ptrs = [base + i * DGRAM_BUF_SIZE for i in range(DGRAM_BUF_COUNT)]
        return True

    def grow_bufring(self) -> None:
        """A receive found the stream buffer ring empty: double its window
        (the new buffers reach the kernel with the next iteration's call).
        Once per batch of completions: the many receives one dry ring fails
        in the same batch ask for the same doubling (growing per completion
        overshot to the whole pool at 100 connections)."""
        if self._grown_at == self._harvested:
            return
        self._grown_at = self._harvested
        spare = self._spare_bufs
        if spare:
            n = min(len(spare), BUF_COUNT - len(spare))   # as many as are in use
            self.recycle.extend(spare[-n:])
            del spare[-n:]

    def _return_buffers(self) -> None:
        recycle = self.recycle
        lib.ul_bufring_recycle_many(self.bufring, recycle, len(recycle))
        recycle.clear()

    @property
    def buffers_lent(self) -> int:
        """Buffers the kernel filled that have not been handed back yet."""
        return len(self.recycle) + len(self.dgram_recycle)

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- submission ---------------------------------------------------------

    def _new_ud(self) -> int:
        ud = self._next_ud
        self._next_ud = ud + 1
        return ud

    def _check_ret(self, ret: int) -> None:
        if ret == -errno.EBUSY:
            # SQ full even after a flush (the kernel is backlogged): reap into the
            # table's futures so the kernel can make room, then the caller retries.
            raise BlockingIOError(errno.EBUSY, "io_uring submission queue is full")
        if ret < 0:
            if ret == -errno.EBADFD:
                self.ring.check_usable()
            raise os_error(ret)

    def register(self, op: Op) -> int:
        """Put op in the table under a fresh user_data; return it.

        The caller prepares its SQE next, so the SQ now has work to submit.
        """
        ud = self._next_ud
        self._next_ud = ud + 1
        op.ud = ud
        self._ops[ud] = op
        self._sq_dirty = True
        return ud

    def submit_prepared(self, op: Op, ret: int) -> None:
        """Finish registering op after its prep call returned ret."""
        if ret < 0:
            del self._ops[op.ud]
            self._check_ret(ret)

    def future_op(self, op: FutureOp) -> OpFuture:
        fut = op.fut
        assert isinstance(fut, OpFuture)
        fut._proactor = self
        fut._op_ud = op.ud
        return fut

    def new_future(self) -> OpFuture:
        return OpFuture(loop=self._loop)

    def cancel(self, ud: int) -> None:
        """Ask the kernel to cancel op ud; the op stays until its final CQE."""
        op = self._ops.get(ud)
        if op is None or op.cancelling or self.closed:
            return
        op.cancelling = True
        self._sq_dirty = True
        ret = lib.ul_prep_cancel(self._ptr, ud, -1, 0, UD_IGNORE)
        if ret < 0:
            # The SQ is full and the kernel is backlogged: the cancel request will
            # be retried on close; the op keeps its references meanwhile.
            op.cancelling = False

    def poll(self, fd: int, mask: int) -> OpFuture:
        """Wait until fd is ready for mask (POLLIN/POLLOUT); result: revents."""
        fut = self.new_future()
        op = FutureOp(fut, None)
        ud = self.register(op)
        self.submit_prepared(op, lib.ul_prep_poll(self._ptr, fd, mask, 0, ud))
        return self.future_op(op)

    def poll_callback(self, fd: int, mask: int,
                      callback: Callable[[int, int], None]) -> CallbackOp:
        """Single-shot poll whose CQE goes to callback(res, flags)."""
        op = CallbackOp(callback)
        ud = self.register(op)
        self.submit_prepared(op, lib.ul_prep_poll(self._ptr, fd, mask, 0, ud))
        return op

    def flush(self) -> None:
        """Submit prepared SQEs now.

        Called before closing an fd that a prepared-but-unsubmitted SQE names:
        once submitted, the kernel holds its own reference to the file, so the
        fd number can be closed (and reused) safely.
        """
        if not self.closed:
            lib.ul_submit(self._ptr)
            self._sq_dirty = False

    def read_into(self, fd: int, buf: Any, nbytes: int, keep: Any,
                  callback: Callable[[int, int], None], passive: bool = False) -> CallbackOp:
        """Internal: read(2) into buf (an ffi buffer), result to callback."""
        op = CallbackOp(callback, (keep, buf))
        ud = self.register(op)
        self.submit_prepared(op, lib.ul_prep_rw(self._ptr, _ring.OP_READ, fd, buf,
                                                nbytes, 2**64 - 1, 0, ud))
        if passive:
            self._passive += 1
        return op

    # -- one iteration --------------------------------------------------------

    def select(self, timeout: float | None) -> list[Any]:
        """BaseEventLoop's hook: poll, then queue the completions' dispatch.

        The completions run as one ready-queue callback, after the callbacks
        that were already ready and before expired timers: the order in which
        CPython's selector loop runs I/O callbacks (a protocol never sees data
        before, say, the task awaiting its connection has resumed).  Used in
        debug mode; otherwise Loop._run_once calls iterate() and dispatch() itself,
        in the same order.
        """
        if self._undispatched or (timeout is not None and timeout <= 0):
            # (a harvest a Ctrl-C left undispatched: its ops, the self-pipe read
            # among them, re-arm only once it runs -- no sleeping before that)
            ns = 0
        elif timeout is None:
            ns = -1
        else:
            ns = math.ceil(timeout * 1e9)
        self.iterate(ns)
        # (Also picks up a harvest whose scheduling a Ctrl-C cut short.)
        if self._undispatched and not self._drain_scheduled:
            self._schedule_dispatch()
        return []

    def iterate(self, ns: int) -> bytes | None:
        """Submit everything pending, wait up to ns (-1: forever), harvest.

        Returns the harvested CQEs (16 bytes each) or None.  In C
        (_speedups.iterate), which does, in order:

        - if a harvest was cut short (``_harvesting``), return
          ``_recover_harvest()``: those CQEs are dispatched before anything new;
        - hand datagram buffers back (``_return_dgram_buffers``);
        - ``must_enter``: under DEFER_TASKRUN, whether the kernel has work to
          run: ops other than passive ones (the self-pipe read) in flight, or
          signal handlers installed (their numbers arrive through the
          self-pipe, and a loop that never sleeps would never run them);
        - busy (ns == 0), nothing to submit, nothing to run: no call at all
          (receive buffers still go back, ``_return_buffers``);
        - before a wait: set ``sleeping`` (read by Loop._write_to_self), then
          look at the ready queue once more -- a callback queued before the
          store is seen here, one queued after it writes to the self-pipe;
        - one ring call (ul_run_recycle): receive buffers back, submit, wait, harvest;
          count the CQEs in ``_harvested``, keep them in ``_undispatched``.
        """
        return _iterate(self, ns)

    def _return_dgram_buffers(self) -> None:
        dgram_recycle = self.dgram_recycle
        lib.ul_bufring_recycle_many(self.dgram_bufring, dgram_recycle, len(dgram_recycle))
        dgram_recycle.clear()

    def _recover_harvest(self) -> bytes | None:
        """The CQEs of a ul_run() whose return was cut short, or None.

        A signal handler that raises (Ctrl-C's KeyboardInterrupt) runs as soon
        as ul_run() is back in Python, before its count is stored: what it took
        off the ring is still in the reap array, and the ring's running total
        says how much.  Must run before the next ul_run() reuses the array.
        """
        self._harvesting = False
        total = self.ring.stats()["cqes_reaped"]
        n = total - self._harvested
        self._harvested = total
        if n <= 0:
            return None
        data: bytes = ffi.buffer(self._cqes, n * _CQE_SIZE)[:]
        self._undispatched.append(data)
        return data

    def _schedule_dispatch(self) -> None:
        # Debug mode (select()): the dispatch as one ready-queue callback.  The
        # handle is queued before the flag is set: an interrupt in between
        # leaves at worst a second, harmless dispatch, never none.
        self._loop._ready.append(asyncio.Handle(  # type: ignore[union-attr]
            self._run_scheduled_dispatch, (), self._loop, None))
        self._drain_scheduled = True

    def _run_scheduled_dispatch(self) -> None:
        self._drain_scheduled = False
        self.dispatch()

    def dispatch(self) -> None:
        """Run the completions harvested so far (exactly once each), oldest
        batch first.

        For each CQE: look its op up, retire the op on its final CQE, and call
        ``op.callback(res, flags)`` (or ``op.complete(res, flags)``).  An error
        escaping a handler is reported and the batch goes on.  If SystemExit or
        KeyboardInterrupt escapes, or the report itself fails, the CQEs not yet
        dispatched go back to the front of ``_undispatched`` for the next
        dispatch: nothing harvested is lost.  In C (_speedups.dispatch), which
        Loop._run_once calls directly.
        """
        _dispatch(self)

    def _report(self, exc: BaseException) -> None:
        # Ops handle their own errors: one escaping a handler is a bug.
        self._loop.call_exception_handler({  # type: ignore[union-attr]
            "message": "uringloop: unhandled error in a completion handler",
            "exception": exc,
        })

    def get_key(self, fd: Any) -> Any:
        """selectors-style lookup of the fd's add_reader/add_writer registration.

        CPython's selector and pipe transports call this (through
        ``selector_events._test_selector_event``) in their ``__repr__``.
        """
        key = fd
        if not isinstance(fd, int):   # selectors accept file objects too
            try:
                fd = int(fd.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {key!r}") from None
        watch = self._watches.get(fd)
        if watch is None:
            raise KeyError(key)
        events = (1 if watch.reader is not None else 0) | (2 if watch.writer is not None else 0)
        return selectors.SelectorKey(fd, fd, events, (watch.reader, watch.writer))

    # -- statistics and teardown ------------------------------------------------

    @property
    def ops_in_flight(self) -> int:
        return len(self._ops)

    def close(self, *, timeout: float = 5.0) -> None:
        """Cancel everything in flight and reap until the table is empty.

        Must run on the loop's thread.  Ops the kernel has not finished after
        ``timeout`` seconds are kept alive forever (their buffers may still be
        written) and the ring is closed anyway.
        """
        if self.closed:
            return
        ring = self.ring
        if ring.forked or ring.pid != os.getpid():
            # A forked child: the ring is the parent's; nothing of it is ours.
            self._ops.clear()
            self.closed = True
            ring.close()
            return
        for op in list(self._ops.values()):
            op.abandon()
        if self._harvesting:
            self._recover_harvest()   # into _undispatched, discarded just below
        for data in self._undispatched:
            self._discard_cqes(data)
        self._undispatched.clear()
        owner = ring.owner_thread
        if owner is None and ring.features.defer_taskrun:
            # Never run: the ring is still R_DISABLED, nothing reached the kernel.
            # (Rings without SINGLE_ISSUER are live from the start: a flush()
            # may have submitted work, so they drain below like any other.)
            self._ops.clear()
            self.closed = True
            ring.close()
            return
        if owner != threading.get_ident() and ring.features.defer_taskrun:
            # Only the owner thread may enter a SINGLE_ISSUER ring.  Closing the
            # ring fd makes the kernel cancel everything; the ops (and buffers)
            # they point at are kept alive for good, in case it writes late.
            logger.debug("uringloop: closing from a foreign thread; %d ops abandoned",
                         len(self._ops))
            _abandoned.extend(self._ops.values())
            self._ops.clear()
            self.closed = True
            ring.close()
            return
        deadline = time.monotonic() + timeout
        next_msg = time.monotonic() + 1.0
        while self._ops:
            for ud, op in list(self._ops.items()):
                if not op.cancelling:
                    self.cancel(ud)
            now = time.monotonic()
            if now >= deadline:
                logger.error("uringloop: %d operations did not finish after close(); "
                             "their buffers are kept alive", len(self._ops))
                _abandoned.extend(self._ops.values())
                self._ops.clear()
                break
            if now >= next_msg:
                logger.debug("uringloop: close() waits for %d operations", len(self._ops))
                next_msg = now + 1.0
            n = lib.ul_run(self._ptr, 100_000_000, 1)
            if n < 0 and n not in (-errno.EINTR,):
                logger.error("uringloop: ring failed while closing: %s", os.strerror(-n))
                _abandoned.extend(self._ops.values())
                self._ops.clear()
                break
            if n > 0:
                self._discard_cqes(ffi.buffer(self._cqes, n * _CQE_SIZE)[:])
        self.closed = True
        ring.close()

    def _discard_cqes(self, data: bytes) -> None:
        """Closing: retire the ops these CQEs finish; clean up, call nobody back."""
        for ud, res, flags in _iter_cqes(data):
            op = self._ops.get(ud)
            if op is None:
                continue
            if not (flags & _CQE_F_MORE) or not op.multishot:
                del self._ops[ud]
            try:
                op.discard(res, flags)   # e.g. close an fd accepted too late
            except Exception:  # noqa: BLE001 - closing must finish
                logger.exception("uringloop: error discarding op on close")
