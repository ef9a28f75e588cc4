"""uringloop.Loop: asyncio's BaseEventLoop driven by an io_uring proactor.

BaseEventLoop keeps what it is good at (the ready queue, timers, DNS,
create_connection/create_server, start_tls, executors, async generators).
It drives I/O through two hooks, ``self._selector.select(timeout)`` and
``self._process_events(events)``; here ``_selector`` is the
:class:`~uringloop._proactor.Proactor`, whose ``select()`` submits, waits
and dispatches completions itself, so ``_process_events`` is a no-op, as in
CPython's BaseProactorEventLoop.

Wakeups and signals share one self-pipe, as in CPython's Unix loop: a
socketpair whose read end always has a read in flight on the ring.  A
``call_soon_threadsafe()`` from another thread writes a zero byte only when
the loop may be asleep in the kernel (see ``_write_to_self``); a signal
handler installed by ``add_signal_handler()`` has Python's C-level handler
write the signal number (``signal.set_wakeup_fd``), and the completion calls
the handler's callback.  Ctrl-C without a handler interrupts the wait
(EINTR) and raises KeyboardInterrupt exactly as under stock asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import inspect
import os
import signal
import socket
import sys
import warnings
import weakref
from asyncio import base_events, events, format_helpers, futures, tasks, unix_events
from typing import Any, Iterable

from . import _ring
from ._network import NetworkMixin
from ._proactor import Proactor
from . import _speedups
from ._ring import ffi
from ._sockets import SocketMethodsMixin
from ._unix import UnixMixin

__all__ = ["Loop", "LoopStatistics"]

_SELF_PIPE_BUFSIZE = 4096


class _SelfRead:
    """The self-pipe's read end and the buffer its read fills.

    Ownership: the read in flight (a passive op) holds ``sock`` and ``cbuf``
    until its final CQE.
    """

    __slots__ = ("sock", "buf", "cbuf", "active")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.buf = bytearray(_SELF_PIPE_BUFSIZE)
        self.cbuf = ffi.from_buffer(self.buf)
        self.active = False


_live_loops: "weakref.WeakSet[Loop]" = weakref.WeakSet()

def _handle_error(handle: events.Handle, exc: BaseException) -> None:
    """Handle._run's except branch, for the handles _speedups runs itself."""
    kwargs = {"debug": handle._loop.get_debug()} if _FORMAT_TAKES_DEBUG else {}
    cb = format_helpers._format_callback_source(handle._callback, handle._args, **kwargs)
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


_FORMAT_TAKES_DEBUG = "debug" in inspect.signature(
    format_helpers._format_callback_source).parameters
#: Whether asyncio's Handle has the slots _speedups builds and runs it by (if a
#: CPython changes them, Handle.__init__ and Handle._run are used instead).
HANDLES_IN_C = _speedups.configure_handles(events.Handle, events.TimerHandle, _handle_error)
_speedups.configure(base_events.BaseEventLoop._run_once, base_events.BaseEventLoop.time,
                    base_events._MIN_SCHEDULED_TIMER_HANDLES,
                    base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION,
                    base_events.MAXIMUM_SELECT_TIMEOUT)
#: Whether TimerHandle has the _when/_scheduled slots call_at and the timer heap
#: read in C (else BaseEventLoop.call_at/call_later are used).
TIMERS_IN_C = _speedups.configure_timers(base_events.BaseEventLoop.call_at,
                                         base_events.BaseEventLoop.call_later)
_speedups.configure_tasks(futures, tasks, base_events.BaseEventLoop.create_task,
                          base_events.BaseEventLoop.create_future, vars(base_events))


def _after_fork_in_child() -> None:
    # BaseEventLoop calls _check_closed() first in call_soon, call_at,
    # create_task, run_until_complete, run_forever...: in the child it now
    # raises an error naming fork.  Shadowing it per instance keeps the parent's
    # hot path free of any extra check (the ring's own hook reset the rings).
    for loop in list(_live_loops):
        loop._check_closed = loop._check_closed_after_fork  # type: ignore[method-assign]
        # The lean call_soon(), create_task(), call_at() and call_later()
        # below do not call _check_closed(): stock's do.
        loop.call_soon = functools.partial(  # type: ignore[method-assign]
            base_events.BaseEventLoop.call_soon, loop)
        for name in ("create_task", "call_at", "call_later"):
            setattr(loop, name, functools.partial(getattr(base_events.BaseEventLoop, name), loop))


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclasses.dataclass(frozen=True)
class LoopStatistics:
    """Counters for one loop (see :meth:`Loop.statistics`)."""

    ops_in_flight: int
    sqes_submitted: int
    cqes_reaped: int
    enters: int
    sq_full_flushes: int
    cq_overflow_flushes: int
    cq_overflows: int
    buffers_lent: int


# On 3.13+ every other attribute BaseEventLoop (3.11-3.13) and Loop set is
# a slot too, so the instance dict stays unmade (it is still there for what
# applications store on a loop): 3.13 specialises a method call such as
# run_forever's ``self._run_once()`` on a class with __slots__ only while its
# instances have no dict (LOAD_ATTR_METHOD_LAZY_DICT); with the dict made,
# every such call took the generic lookup (callgrind, 1 KiB echo at one
# connection: 6.2k -> 5.6k instructions per round trip with the transport's
# slots below).  3.11 and 3.12 specialise through a dict with the class's
# shared keys (hence its limit of 29 keys, docs/benchmarks.md): all-slots
# measured the same on 3.11 and 1.5% more instructions on 3.12, so there
# the rest stays in the dict.
_ALL_SLOTS_LOOP: tuple[str, ...] = (
    # BaseEventLoop's
    "_asyncgens", "_asyncgens_shutdown_called", "_coroutine_origin_tracking_enabled",
    "_coroutine_origin_tracking_saved_depth", "_current_handle", "_default_executor",
    "_exception_handler", "_executor_shutdown_called", "_internal_fds", "_old_agen_hooks",
    "_selector", "_task_factory", "_thread_id", "slow_callback_duration",
    # Loop's and its mixins'
    "_csock", "_self_read", "_transports", "_unix_server_sockets", "_watches",
) if sys.version_info >= (3, 13) else ()


class Loop(SocketMethodsMixin, NetworkMixin, UnixMixin, base_events.BaseEventLoop):
    """An asyncio event loop whose I/O runs on io_uring.

    ``disable`` switches optional kernel features off (their fallback paths
    are used instead); see ``uringloop._ring.OPTIONAL_FEATURES``.  Raises
    :class:`uringloop.UringUnavailableError` when io_uring cannot be used.
    """

    # What the C _run_once reads per iteration is in slots (fixed
    # offsets; see speedups.c, "Slot access").  BaseEventLoop sets them.
    __slots__ = ("_ready", "_scheduled", "_stopping", "_timer_cancelled_count",
                 "_clock_resolution", "_debug", "_proactor", "_signal_handlers",
                 "_closed") + _ALL_SLOTS_LOOP

    def __init__(self, *, sq_entries: int = _ring.DEFAULT_SQ_ENTRIES,
                 cq_entries: int = _ring.DEFAULT_CQ_ENTRIES,
                 disable: Iterable[str] = ()) -> None:
        super().__init__()
        self._signal_handlers: dict[int, asyncio.Handle] = {}
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._watches: dict[int, Any] = {}
        self._unix_server_sockets: dict[socket.socket, int] = {}
        self._csock: socket.socket | None = None
        # Read state of the self-pipe, one object: every instance attribute
        # counts, as CPython keeps instance dicts compact ("shared keys") only
        # up to 30 attributes, and past that every self.x is a dict lookup.
        self._self_read = _SelfRead()
        try:
            ring = _ring.Ring(sq_entries, cq_entries, disable)
        except BaseException:
            self._closed = True   # nothing to close; keep __del__ quiet
            raise
        self._proactor = Proactor(ring, self._watches)
        _live_loops.add(self)
        self._selector = self._proactor  # BaseEventLoop._run_once calls select()
        self._proactor.set_loop(self)
        self._make_self_pipe()

    @property
    def features(self) -> _ring.Features:
        """What the kernel gave this loop's ring (immutable)."""
        return self._proactor.ring.features

    def __repr__(self) -> str:
        return (f"<{self.__class__.__name__} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")

    # -- the BaseEventLoop hooks ------------------------------------------------

    def _process_events(self, event_list: Any) -> None:
        pass  # completions are dispatched by the proactor (see _run_once)

    # _run_once(): one iteration, in C (_speedups.method("_run_once")).  Same
    # semantics and order as BaseEventLoop._run_once with a selector: drop
    # cancelled timers (``_compact_timers``), poll the kernel up to the next
    # timer (Proactor.iterate), then run the callbacks that were ready, then
    # the I/O completions (Proactor.dispatch, without a Handle of their own),
    # then the timers that expired.  If a ready callback raises, the batch of
    # completions is scheduled for the next iteration, not lost.  Debug mode
    # runs CPython's _run_once, whose slow-callback accounting then covers the
    # completion batch as one callback (Proactor.select schedules it).
    _run_once = _speedups.method("_run_once")

    def _compact_timers(self) -> None:
        """Drop cancelled timers: rebuild the heap when they are many, else
        pop those at its head (BaseEventLoop._run_once's first step)."""
        scheduled = self._scheduled
        count = len(scheduled)
        if (count > base_events._MIN_SCHEDULED_TIMER_HANDLES and
                self._timer_cancelled_count / count
                > base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            live = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    live.append(handle)
            heapq.heapify(live)
            self._scheduled = live
            self._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)._scheduled = False

    # call_soon(callback, *args, context=None): in C (_speedups.method("call_soon"))
    # outside debug mode: it builds the Handle (the state Handle.__init__ sets)
    # and appends it to the ready queue, without BaseEventLoop.call_soon's two
    # inner method calls -- asyncio's tasks and futures schedule every step
    # with it.  Debug mode, a closed loop or unexpected arguments go to
    # _call_soon_slow, stock's body.
    call_soon = _speedups.method("call_soon")

    # call_at/call_later: stock's bodies in C outside debug mode (speedups.c,
    # "Timers"): the TimerHandle built in its slots and pushed on _scheduled
    # by heapq's moves, comparing two TimerHandles' _when directly instead of
    # calling TimerHandle.__lt__.  Debug mode, a closed loop, a deadline that
    # is not a float or int, unexpected arguments: BaseEventLoop's own.
    call_at = _speedups.method("call_at")
    call_later = _speedups.method("call_later")

    def _call_soon_slow(self, callback: Any, *args: Any, context: Any = None) -> events.Handle:
        # Stock's body, inline: one frame between the caller and _call_soon, as
        # under stock asyncio, so a handle's source traceback ends at the caller.
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_soon")
        handle = self._call_soon(callback, args, context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        return handle

    # Argument errors read exactly as stock's ("BaseEventLoop.call_soon() got ...").
    _call_soon_slow.__name__ = "call_soon"
    _call_soon_slow.__qualname__ = "BaseEventLoop.call_soon"

    # Called for every Future and Task (by _asyncio: get_debug, and is_running
    # for an eager task) and per message by streams, timeouts and aiohttp:
    # stock's bodies, in C (speedups.c).  In debug mode create_future and
    # create_task are stock's (a future's source traceback ends in them), as
    # is create_task with a task factory or a closed loop.
    get_debug = _speedups.method("get_debug")
    is_running = _speedups.method("is_running")
    time = _speedups.method("time")
    create_future = _speedups.method("create_future")
    create_task = _speedups.method("create_task")

    def _check_closed_after_fork(self) -> None:
        # In a forked child the ring is the parent's: an error naming fork,
        # not a loop that half works (installed by _after_fork_in_child).
        if self._closed:
            raise RuntimeError("Event loop is closed")
        self._proactor.ring.check_usable()

    def run_forever(self) -> None:
        if not self.is_closed() and not self.is_running():
            self._proactor.ring.claim_thread()
        super().run_forever()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(f"Closing the loop {self!r} on interpreter shutdown "
                          f"stage, skipping signal handlers removal",
                          ResourceWarning, source=self)
            self._signal_handlers.clear()
        for acceptor in self._proactor.acceptors.values():
            acceptor.stopped = True   # connections completing now are closed
        self._close_self_pipe()   # drains and closes the ring too
        self._selector = None     # as CPython's loops: transports' repr reads it
        super().close()

    def statistics(self) -> LoopStatistics:
        """Operations in flight and ring counters, for monitoring and tests."""
        proactor = self._proactor
        if proactor.closed:
            st = {"sqes_submitted": 0, "cqes_reaped": 0, "enters": 0,
                  "sq_full_flushes": 0, "cq_overflow_flushes": 0, "cq_overflow_kernel": 0}
        else:
            st = proactor.ring.stats()
        return LoopStatistics(
            ops_in_flight=proactor.ops_in_flight,
            sqes_submitted=st["sqes_submitted"],
            cqes_reaped=st["cqes_reaped"],
            enters=st["enters"],
            sq_full_flushes=st["sq_full_flushes"],
            cq_overflow_flushes=st["cq_overflow_flushes"],
            cq_overflows=st["cq_overflow_kernel"],
            buffers_lent=proactor.buffers_lent,
        )

    # -- self-pipe: cross-thread wakeups and signal numbers -------------------------

    def _make_self_pipe(self) -> None:
        ssock, self._csock = socket.socketpair()
        ssock.setblocking(False)
        self._csock.setblocking(False)
        self._self_read.sock = ssock
        self._internal_fds += 1
        self._self_read.active = True
        self._arm_self_read()

    def _arm_self_read(self) -> None:
        ssock = self._self_read.sock
        assert ssock is not None
        self._proactor.read_into(ssock.fileno(), self._self_read.cbuf,
                                 _SELF_PIPE_BUFSIZE, ssock,
                                 self._on_self_read, passive=True)

    def _on_self_read(self, res: int, flags: int) -> None:
        self._proactor._passive -= 1
        if res > 0:
            self._process_self_data(bytes(self._self_read.buf[:res]))
        if self._self_read.active and res != 0:
            self._arm_self_read()

    def _close_self_pipe(self) -> None:
        # The read in flight keeps the socket object alive until its final
        # CQE (Proactor.close cancels and reaps it); only then is it closed.
        self._self_read.active = False
        ssock, csock = self._self_read.sock, self._csock
        self._self_read.sock = self._csock = None
        if csock is not None:
            csock.close()
        self._internal_fds -= 1
        self._proactor.close()
        if ssock is not None:
            ssock.close()

    def _write_to_self(self) -> None:
        # Called by call_soon_threadsafe() from any thread.  A byte is only
        # needed when the loop may be asleep in io_uring_enter: the loop sets
        # Proactor.sleeping before it re-checks the ready queue, and the caller
        # appended its handle before reading the flag, so one of the two
        # always sees the other (both run under the GIL).
        if not self._proactor.sleeping:
            return
        csock = self._csock
        if csock is None:
            return
        try:
            csock.send(b"\0")
        except OSError:
            if self._debug:
                base_events.logger.debug("Fail to write a null byte into the "
                                         "self-pipe socket", exc_info=True)

    # -- signals: CPython's Unix implementation, over our self-pipe ------------------

    _stock_add_signal_handler = unix_events._UnixSelectorEventLoop.add_signal_handler

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        self._stock_add_signal_handler(sig, callback, *args)
        # The self-pipe only has to wake the loop: a full one is harmless, so no
        # warning.  CPython schedules that warning from its C signal handler
        # with Py_AddPendingCall, which on 3.11 takes a lock the interrupted
        # thread may be releasing: a signal storm deadlocked the interpreter
        # (seen in CI, tests/reliability/test_faults.py).
        signal.set_wakeup_fd(self._csock.fileno(),  # type: ignore[union-attr]
                             warn_on_full_buffer=False)
    remove_signal_handler = unix_events._UnixSelectorEventLoop.remove_signal_handler
    _handle_signal = unix_events._UnixSelectorEventLoop._handle_signal
    _check_signal = unix_events._UnixSelectorEventLoop._check_signal
    _process_self_data = unix_events._UnixSelectorEventLoop._process_self_data


if sys.version_info < (3, 12):
    def _reset_wakeup_fd_in_child() -> None:
        # The wakeup fd (our self-pipe) is inherited by a forked child: a signal
        # the child receives would be written into the parent's self-pipe and the
        # parent's loop would run its handler.  CPython 3.12+ resets it in every
        # forked child (asyncio.events.on_fork); do the same on 3.11.
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # pragma: no cover - not the main thread
            pass

    os.register_at_fork(after_in_child=_reset_wakeup_fd_in_child)
