"""sendfile through the ring: IORING_OP_SPLICE, file -> pipe -> socket.

``loop.sock_sendfile()`` and ``loop.sendfile()`` (which calls it for a plain
stream transport) end in ``_sock_sendfile_native``.  CPython's Unix loop
calls ``os.sendfile()`` there, driven by write readiness (uringloop drives it
by ring polls).  ``os.sendfile()`` runs in the loop's thread: when the file's
pages are not in the page cache, the loop blocks on the disk.

Here each chunk is two splices: file -> pipe on the ring (at an explicit
file offset; the kernel runs it in an io-wq worker, so a page-cache miss
blocks a kernel thread, never the loop), then pipe -> socket (the pipe holds
page references, not copies) as a non-blocking ``splice(2)`` in the loop's
thread, which cannot block (``SPLICE_OUT_INLINE``; measured: half the CPU
of a second ring splice, which the kernel also hands to an io-wq worker).  The pipe is made as large as the
system allows (``SPLICE_PIPE_SIZE``, 1 MiB) and is one per operation,
O_CLOEXEC, closed on every exit.  A socket whose send buffer is full answers
the second splice with EAGAIN (asyncio sockets are non-blocking): a ring
poll for POLLOUT, then the splice again.  The whole call runs as the
coroutine of the ``sock_sendfile`` that asked for it.

Semantics are stock's: ``count``/``offset`` as ``os.sendfile`` loops use
them, the file position set to ``offset + sent`` when anything was sent
(also on error and cancellation), SendfileNotAvailableError (so
``sock_sendfile`` falls back to read/send) when nothing could be sent.
Files that are not regular files, payloads below ``SPLICE_THRESHOLD`` and
rings without SPLICE take stock's os.sendfile path.

Ownership: each splice is an op holding the socket, the file object and the
pipe.  Cancelling the coroutine only requests cancellation of the splice in
flight and then waits for its final CQE: bytes that reached the socket
anyway are counted, so after a cancellation the file position is exactly
``offset`` + what the peer will receive, as with stock.  The pipe is closed
only when no splice is in flight (after an SQ flush, for a cancelled poll).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import io
import os
import select
import stat
from asyncio import exceptions, unix_events
from typing import Any

from . import _ring
from ._proactor import CallbackOp, Proactor, os_error
from ._ring import ffi, lib

_OFF_NONE = 2**64 - 1   # "use the fd's own position": required for pipes and sockets
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

#: The pipe size asked for (the kernel grants up to /proc/sys/fs/pipe-max-size
#: to unprivileged users, and falls back to its default, 64 KiB, on refusal).
SPLICE_PIPE_SIZE = 1024 * 1024


def _threshold_from_env(default: int) -> int:
    raw = os.environ.get("URINGLOOP_SPLICE_THRESHOLD", "").strip()
    if not raw:
        return default
    try:
        return max(int(raw, 0), 0)
    except ValueError:
        raise ValueError(f"URINGLOOP_SPLICE_THRESHOLD must be an integer (bytes; 0 = off), "
                         f"not {raw!r}") from None


#: sendfile of at least this many bytes (``count``, or the file size) goes
#: through ring splices; smaller ones take os.sendfile.  0 switches splicing
#: off.  Measured (docs/benchmarks.md, "Zero-copy"): on a page-cache-warm file
#: os.sendfile needs 0.65-0.8x the CPU per MiB of the splices; on a cold 64 MiB
#: file it blocks the loop for ~14 ms at a time where the splices block it for
#: 1-5 ms.  Small files cost splicing the most (a pipe and two splices per
#: call) and stall os.sendfile the least: they keep os.sendfile.
SPLICE_THRESHOLD = _threshold_from_env(1024 * 1024)

#: pipe -> socket as a non-blocking splice(2) in the loop's thread (it never
#: blocks: the pages are in the pipe, the socket is non-blocking) rather than
#: a second ring op (which the kernel runs in an io-wq worker).
SPLICE_OUT_INLINE = True
_SPLICE_F_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)

_UnixLoop: Any = unix_events._UnixSelectorEventLoop


async def _stock_sock_sendfile_native(loop: Any, sock: Any, file: Any, offset: int,
                                      count: int | None) -> int:
    """CPython's os.sendfile path (driven by ring polls on uringloop)."""
    sent: int = await _UnixLoop._sock_sendfile_native(loop, sock, file, offset, count)
    return sent

#: Process-wide counter of sendfile calls that took the splice path (tests).
splice_stats = {"calls": 0}


class _SplicePipe:
    """The pipe between the file and the socket: one per sendfile call."""

    __slots__ = ("rfd", "size", "wfd")

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.wfd, _F_SETPIPE_SZ, SPLICE_PIPE_SIZE)
        except OSError:
            pass   # EPERM over the per-user pipe budget: the default size works too
        try:
            self.size = fcntl.fcntl(self.wfd, _F_GETPIPE_SZ)
        except OSError:
            self.size = 65536

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1


class _Splice:
    """One IORING_OP_SPLICE; ``wait()`` returns its result (bytes moved or -errno).

    Cancelling the waiting task only *requests* cancellation: ``wait()`` still
    waits for the kernel's answer and raises :class:`_Cancelled` carrying it,
    so the caller knows exactly how many bytes the socket got.
    """

    __slots__ = ("fut", "op", "proactor")

    def __init__(self, proactor: Proactor, fd_in: int, off_in: int, fd_out: int,
                 nbytes: int, keep: Any) -> None:
        self.proactor = proactor
        self.fut = proactor._loop.create_future()  # type: ignore[union-attr]
        self.op = op = CallbackOp(self._done, keep)
        ud = proactor.register(op)
        # SQE: fd = fd_out, off = off_out, splice_off_in (the addr field),
        # splice_fd_in (the file_index field), len, splice_flags.
        ret = lib.ul_prep_ext(proactor._ptr, _ring.OP_SPLICE, fd_out,
                              ffi.cast("void *", off_in & _OFF_NONE), nbytes, _OFF_NONE,
                              0, 0, fd_in, 0, 0, 0, ud)
        proactor.submit_prepared(op, ret)

    def _done(self, res: int, flags: int) -> None:
        if not self.fut.done():
            self.fut.set_result(res)

    async def wait(self) -> int:
        fut = self.fut
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.done():
                raise _Cancelled(fut.result()) from None
            self.proactor.cancel(self.op.ud)
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                pass   # cancelled again: the kernel's answer is still on its way
        raise _Cancelled(fut.result())


class _Cancelled(BaseException):
    """The task was cancelled while a splice was in flight; ``res``: its result."""

    def __init__(self, res: int) -> None:
        super().__init__(res)
        self.res = res


def _check(res: int) -> int:
    if res < 0:
        raise os_error(res)
    return res


async def sock_sendfile_native(loop: Any, sock: Any, file: Any, offset: int,
                               count: int | None) -> int:
    """``_sock_sendfile_native`` of uringloop.Loop (see the module docstring)."""
    proactor: Proactor = loop._proactor
    threshold = SPLICE_THRESHOLD
    if not threshold or not proactor.ring.features.splice:
        return await _stock_sock_sendfile_native(loop, sock, file, offset, count)
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation):
        raise exceptions.SendfileNotAvailableError("not a regular file") from None
    try:
        st = os.fstat(fileno)
    except OSError:
        raise exceptions.SendfileNotAvailableError("not a regular file") from None
    if not stat.S_ISREG(st.st_mode):
        # Stock decides (os.sendfile refuses most of them: read/send fallback).
        return await _stock_sock_sendfile_native(loop, sock, file, offset, count)
    blocksize = count if count else st.st_size
    if not blocksize:
        return 0   # empty file, as stock
    if blocksize < threshold:
        return await _stock_sock_sendfile_native(loop, sock, file, offset, count)
    try:
        pipe = _SplicePipe()
    except OSError:   # out of fds or pipe memory: stock's path needs neither
        return await _stock_sock_sendfile_native(loop, sock, file, offset, count)
    splice_stats["calls"] += 1
    return await _splice_loop(proactor, pipe, sock, file, fileno, offset, count)


async def _splice_loop(proactor: Proactor, pipe: _SplicePipe, sock: Any, file: Any,
                       fileno: int, offset: int, count: int | None) -> int:
    keep = (sock, file, pipe)
    sock_fd = sock.fileno()
    total = 0
    try:
        size = pipe.size
        while True:
            want = size if not count else min(size, count - total)
            if want <= 0:
                break
            try:
                n = _check(await _Splice(proactor, fileno, offset + total, pipe.wfd,
                                         want, keep).wait())
            except _Cancelled:
                raise asyncio.CancelledError() from None   # nothing new reached the socket
            except OSError as exc:
                raise _sendfile_error(exc, total) from exc
            if n == 0:
                break   # end of file
            while n:
                try:
                    if SPLICE_OUT_INLINE:
                        m = os.splice(pipe.rfd, sock_fd, n, flags=_SPLICE_F_NONBLOCK)
                    else:
                        m = _check(await _Splice(proactor, pipe.rfd, -1, sock_fd, n,
                                                 keep).wait())
                except _Cancelled as c:
                    if c.res > 0:
                        total += c.res   # the socket got these: the file position says so
                    raise asyncio.CancelledError() from None
                except BlockingIOError:
                    # Send buffer full: wait for room on the ring, then again.
                    await proactor.poll(sock_fd, select.POLLOUT)
                    continue
                except OSError as exc:
                    raise _sendfile_error(exc, total) from exc
                if m <= 0:   # cannot happen with n bytes in the pipe: never spin
                    raise _sendfile_error(OSError(errno.EIO, "splice from the pipe moved "
                                                  "nothing"), total)
                n -= m
                total += m
        return total
    finally:
        if total > 0:
            os.lseek(fileno, offset + total, os.SEEK_SET)   # stock's filepos update
        # Every splice has had its final CQE (see _Splice.wait); a cancelled poll
        # may still be prepared: submit it before the fds can be reused.
        proactor.flush()
        pipe.close()


def _sendfile_error(exc: OSError, total: int) -> BaseException:
    """Stock's error mapping: nothing sent -> fall back; else the error."""
    if total == 0:
        return exceptions.SendfileNotAvailableError("splice failed")
    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
        return ConnectionError("socket is not connected", errno.ENOTCONN)
    return exc
