"""The loop's socket methods (sock_*) and readiness callbacks (add_reader/add_writer).

Each ``sock_*`` coroutine first tries the non-blocking system call, exactly
as CPython's selector loop does; only when the kernel says EAGAIN does it
wait, and it waits with a single-shot IORING_OP_POLL_ADD on the ring rather
than an epoll registration.  Waiting for readiness instead of submitting the
receive itself is what makes cancellation lose nothing: a cancelled poll has
consumed no bytes and accepted no connection, so the next call on the socket
sees them.  (Transports use the ring-native multishot receive; see
``_stream.py``.)

``add_reader``/``add_writer`` keep asyncio's level-triggered semantics with a
single-shot poll re-armed after each callback has run.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import stat
from asyncio import base_events, events
from typing import Any, Callable

from ._proactor import CallbackOp, Proactor, os_error

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
_POLL_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _FdWatch:
    """add_reader/add_writer state of one fd: the callbacks and the poll in flight.

    Ownership: ``op`` is the single-shot poll in flight, if any; it is the
    proactor's until its CQE.  ``reader``/``writer`` are asyncio Handles.
    """

    __slots__ = ("fd", "reader", "writer", "op", "op_mask", "pending")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reader: events.Handle | None = None
        self.writer: events.Handle | None = None
        self.op: CallbackOp | None = None
        self.op_mask = 0
        self.pending = 0   # callbacks scheduled but not yet run


def _check_pollable(fd: int) -> int:
    """Refuse what epoll_ctl(EPOLL_CTL_ADD) refuses under stock asyncio: a closed fd
    (EBADF), a regular file or a directory (EPERM).  A poll on those would not fail:
    it would report them ready forever."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
    return fd


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class SocketMethodsMixin:
    """sock_* coroutines and add_reader/add_writer for :class:`uringloop.Loop`."""

    _proactor: Proactor
    _debug: bool
    _transports: Any
    _watches: dict[int, _FdWatch]

    if False:  # for type checkers: provided by BaseEventLoop
        def _check_closed(self) -> None: ...
        def create_future(self) -> asyncio.Future[Any]: ...
        def _ensure_resolved(self, *a: Any, **k: Any) -> Any: ...
        def is_closed(self) -> bool: ...

    # -- readiness waits ------------------------------------------------------

    async def _wait_fd(self, fd: int, mask: int) -> None:
        await self._proactor.poll(fd, mask)

    def _check_sock(self, sock: Any) -> None:
        base_events._check_ssl_socket(sock)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _ensure_fd_no_transport(self, fd: Any) -> None:
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # -- sock_* -----------------------------------------------------------------

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receive up to n bytes from sock (a non-blocking socket)."""
        self._check_sock(sock)
        while True:
            try:
                return sock.recv(n)
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLIN)

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        """Receive into buf; the kernel never writes buf after this returns."""
        self._check_sock(sock)
        while True:
            try:
                return sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLIN)

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        """Receive a datagram of up to bufsize bytes: (data, address)."""
        self._check_sock(sock)
        while True:
            try:
                return sock.recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLIN)

    async def sock_recvfrom_into(self, sock: socket.socket, buf: Any,
                                 nbytes: int = 0) -> tuple[int, Any]:
        """Receive a datagram into buf: (nbytes, address)."""
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        while True:
            try:
                return sock.recvfrom_into(buf, nbytes)
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLIN)

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        """Send all of data; on error there is no telling how much was sent."""
        self._check_sock(sock)
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n == len(data):
            return
        view = memoryview(data).cast("B")
        total = len(view)
        self._ensure_fd_no_transport(sock.fileno())
        while n < total:
            await self._wait_fd(sock.fileno(), POLLOUT)
            try:
                n += sock.send(view[n:])
            except (BlockingIOError, InterruptedError):
                pass

    async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> int:
        """Send a datagram to address; returns the number of bytes sent."""
        self._check_sock(sock)
        while True:
            try:
                return sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLOUT)

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """Connect sock to address, resolving host names for INET sockets."""
        self._check_sock(sock)
        if sock.family == socket.AF_INET or (
                base_events._HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        while True:
            await self._wait_fd(fd, POLLOUT)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                return
            if err not in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
                raise OSError(err, f"Connect call failed {address}")

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Accept a connection: (conn, address); conn is non-blocking."""
        self._check_sock(sock)
        while True:
            try:
                conn, address = sock.accept()
                conn.setblocking(False)
                return conn, address
            except (BlockingIOError, InterruptedError):
                pass
            self._ensure_fd_no_transport(sock.fileno())
            await self._wait_fd(sock.fileno(), POLLIN)

    # -- add_reader / add_writer -----------------------------------------------

    def _add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> events.Handle:
        return self._add_watch(fd, callback, args, reader=True)

    def _add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> events.Handle:
        return self._add_watch(fd, callback, args, reader=False)

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call callback(*args) whenever fd is readable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(_check_pollable(_fileobj_to_fd(fd)), callback, *args)

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call callback(*args) whenever fd is writable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(_check_pollable(_fileobj_to_fd(fd)), callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching fd for reading; True if a reader was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_watch(_fileobj_to_fd(fd), reader=True)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching fd for writing; True if a writer was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_watch(_fileobj_to_fd(fd), reader=False)

    def _remove_reader(self, fd: int) -> bool:
        return self._remove_watch(fd, reader=True)

    def _remove_writer(self, fd: int) -> bool:
        return self._remove_watch(fd, reader=False)

    def _add_watch(self, fd: int, callback: Callable[..., Any], args: tuple[Any, ...],
                   reader: bool) -> events.Handle:
        self._check_closed()
        handle = events.Handle(callback, args, self, None)  # type: ignore[arg-type]
        watch = self._watches.get(fd)
        if watch is None:
            watch = self._watches[fd] = _FdWatch(fd)
        old = watch.reader if reader else watch.writer
        if reader:
            watch.reader = handle
        else:
            watch.writer = handle
        if old is not None:
            old.cancel()
        self._arm_watch(watch)
        return handle

    def _remove_watch(self, fd: int, reader: bool) -> bool:
        if self.is_closed():
            return False
        watch = self._watches.get(fd)
        if watch is None:
            return False
        handle = watch.reader if reader else watch.writer
        if reader:
            watch.reader = None
        else:
            watch.writer = None
        if watch.reader is None and watch.writer is None:
            del self._watches[fd]
        self._arm_watch(watch)
        if handle is None:
            return False
        handle.cancel()
        return True

    def _watch_mask(self, watch: _FdWatch) -> int:
        if self._watches.get(watch.fd) is not watch:
            return 0
        mask = 0
        if watch.reader is not None:
            mask |= POLLIN
        if watch.writer is not None:
            mask |= POLLOUT
        return mask

    def _arm_watch(self, watch: _FdWatch) -> None:
        """Make the poll in flight match the callbacks registered (or none)."""
        mask = 0 if watch.pending else self._watch_mask(watch)
        if watch.op is not None:
            if watch.op_mask == mask:
                return
            self._proactor.cancel(watch.op.ud)   # its CQE re-arms with the new mask
            return
        if mask:
            watch.op_mask = mask
            watch.op = self._proactor.poll_callback(
                watch.fd, mask, lambda res, flags: self._on_watch_poll(watch, res))

    def _on_watch_poll(self, watch: _FdWatch, res: int) -> None:
        watch.op = None
        if res == -errno.ECANCELED or self.is_closed():
            self._arm_watch(watch)
            return
        if res == -errno.EBADF:
            # The fd was closed without remove_reader()/remove_writer().  epoll
            # forgets a closed fd silently; so does this: no callback, no re-arm
            # (re-arming would fail again at once, a busy loop).  The registration
            # stays until it is removed or replaced.
            return
        if res < 0:
            # Other errors: report as readable/writable so the callback sees
            # the error from its own system call.
            revents = POLLIN | POLLOUT
        else:
            revents = res
        ready = self._ready  # type: ignore[attr-defined]
        fire_read = watch.reader is not None and revents & (POLLIN | _POLL_ERR)
        fire_write = watch.writer is not None and revents & (POLLOUT | _POLL_ERR)
        for handle in (watch.reader if fire_read else None,
                       watch.writer if fire_write else None):
            if handle is not None and not handle._cancelled:
                watch.pending += 1
                ready.append(events.Handle(self._run_watch_callback, (watch, handle),
                                           self, None))  # type: ignore[arg-type]
        if not watch.pending:
            self._arm_watch(watch)

    def _run_watch_callback(self, watch: _FdWatch, handle: events.Handle) -> None:
        try:
            if not handle._cancelled:
                handle._run()
        finally:
            watch.pending -= 1
            if not watch.pending:
                self._arm_watch(watch)
