"""Datagrams, pipes, subprocesses, Unix sockets and sendfile for :class:`uringloop.Loop`.

UDP datagrams use the ring-native transport of ``_datagram.py`` (multishot
recvmsg) when the kernel has multishot receive and buffer rings; otherwise,
and for Unix datagram sockets, CPython's transport below.

These reuse CPython's own transports (``selector_events._SelectorDatagramTransport``,
``unix_events._UnixReadPipeTransport``/``_UnixWritePipeTransport``,
``unix_events._UnixSubprocessTransport``) and its ``create_unix_*`` and
``sock_sendfile`` code.  All of them drive I/O only through the loop's
``_add_reader``/``_add_writer`` hooks, which on uringloop are polls on the
ring (see ``_sockets.py``), so they run unchanged, with stock semantics, and
no epoll anywhere.  ``sock_sendfile`` splices through the ring (``_splice.py``)
and keeps CPython's os.sendfile path for what splicing does not cover.

Child processes are watched through the ring too: IORING_OP_WAITID on a
pidfd where the kernel has it (6.7+), else a poll on the pidfd followed by
``waitpid(WNOHANG)``.  No watcher thread, no SIGCHLD handler.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from asyncio import selector_events, unix_events
from typing import Any

from . import _datagram, _network, _ring, _splice
from ._proactor import CallbackOp, Proactor
from ._ring import ffi, lib

logger = logging.getLogger("asyncio")

# CPython's private classes reused here (pinned by tests/test_private_asyncio_api.py;
# typeshed does not describe them, hence Any).
_SelectorDatagramTransport: Any = \
    selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
_UnixReadPipeTransport: Any = unix_events._UnixReadPipeTransport  # type: ignore[attr-defined]
_UnixWritePipeTransport: Any = unix_events._UnixWritePipeTransport  # type: ignore[attr-defined]
_UnixSubprocessTransport: Any = unix_events._UnixSubprocessTransport  # type: ignore[attr-defined]
_UnixLoop: Any = unix_events._UnixSelectorEventLoop
_SelectorLoop: Any = selector_events.BaseSelectorEventLoop

_P_PIDFD = 3
_WEXITED = 4
_CLD_EXITED = 1
# siginfo_t (x86-64 and arm64 layouts agree): si_code at 8, si_status at 24.
_SIGINFO_SIZE = 128


class UnixMixin:
    """The pieces of CPython's Unix loop that uringloop reuses or re-plumbs."""

    _proactor: Proactor
    _unix_server_sockets: dict[socket.socket, int]

    # -- datagrams and pipes: CPython's transports over ring polls -----------------

    def _make_datagram_transport(self, sock: socket.socket, protocol: Any, address: Any = None,
                                 waiter: Any = None, extra: Any = None) -> Any:
        self._ensure_fd_no_transport(sock)  # type: ignore[attr-defined]
        if _datagram.supports(sock, self._proactor):
            # UDP with multishot recvmsg + buffer rings: the ring-native transport.
            return _datagram.UringDatagramTransport(self, sock, protocol, address,
                                                    waiter, extra)
        return _SelectorDatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe: Any, protocol: Any, waiter: Any = None,
                                  extra: Any = None) -> Any:
        return _UnixReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe: Any, protocol: Any, waiter: Any = None,
                                   extra: Any = None) -> Any:
        return _UnixWritePipeTransport(self, pipe, protocol, waiter, extra)

    # -- Unix sockets -------------------------------------------------------------

    create_unix_connection = unix_events._UnixSelectorEventLoop.create_unix_connection
    _stock_create_unix_server = unix_events._UnixSelectorEventLoop.create_unix_server

    async def create_unix_server(self, protocol_factory: Any, path: Any = None,
                                 **kwargs: Any) -> Any:
        # A passed-in socket may be shared: single-shot accepts (see _network).
        _network.mark_passed_in(kwargs.get("sock"))
        return await self._stock_create_unix_server(protocol_factory, path, **kwargs)

    def _cleanup_unix_server_socket(self, sock: socket.socket, path: Any) -> None:
        """cleanup_socket (3.13): unlink the path if it is still our socket's."""
        prev_ino = self._unix_server_sockets.pop(sock)
        try:
            if os.stat(path).st_ino == prev_ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    # -- sendfile: ring splices (_splice.py), else os.sendfile driven by ring polls --

    async def _sock_sendfile_native(self, sock: Any, file: Any, offset: int,
                                    count: int | None) -> int:
        return await _splice.sock_sendfile_native(self, sock, file, offset, count)

    _sock_sendfile_native_impl = _UnixLoop._sock_sendfile_native_impl
    _sock_sendfile_update_filepos = _UnixLoop._sock_sendfile_update_filepos
    _sock_add_cancellation_callback = _UnixLoop._sock_add_cancellation_callback
    _sendfile_native = _SelectorLoop._sendfile_native

    # -- subprocesses ---------------------------------------------------------------

    async def _make_subprocess_transport(self, protocol: Any, args: Any, shell: bool,
                                         stdin: Any, stdout: Any, stderr: Any, bufsize: int,
                                         extra: Any = None, **kwargs: Any) -> Any:
        waiter = self.create_future()  # type: ignore[attr-defined]
        transp = _UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        _ChildWatch(self, transp.get_pid(), transp).start()
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp


class _ChildWatch:
    """Waits for one child's exit on the ring and reports it to its transport.

    Ownership: the pidfd belongs to this watch until the exit is seen (or the
    loop closes); the WAITID op owns the siginfo buffer it writes into.
    """

    __slots__ = ("info", "loop", "op", "pid", "pidfd", "transp")

    def __init__(self, loop: Any, pid: int, transp: Any) -> None:
        self.loop = loop
        self.pid = pid
        self.transp = transp
        self.pidfd = -1
        self.info: Any = None
        self.op: CallbackOp | None = None

    def start(self) -> None:
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            # Already reaped by someone else: nothing to wait for.
            self._unknown_child()
            return
        proactor: Proactor = self.loop._proactor
        if proactor.ring.features.waitid:
            self._arm_waitid(proactor)
        else:
            self._arm_poll(proactor)

    def _arm_waitid(self, proactor: Proactor) -> None:
        self.info = ffi.new("char[]", _SIGINFO_SIZE)
        op = CallbackOp(self._on_waitid, (self.info,), on_discard=self._discard)
        ud = proactor.register(op)
        ret = lib.ul_prep_ext(proactor._ptr, _ring.OP_WAITID, self.pidfd, ffi.NULL,
                              _P_PIDFD, 0, 0, int(ffi.cast("uintptr_t", self.info)),
                              _WEXITED, 0, 0, 0, ud)
        proactor.submit_prepared(op, ret)
        self.op = op

    def _arm_poll(self, proactor: Proactor) -> None:
        op = CallbackOp(self._on_poll, None, on_discard=self._discard)
        ud = proactor.register(op)
        proactor.submit_prepared(op, lib.ul_prep_poll(proactor._ptr, self.pidfd,
                                                      select.POLLIN, 0, ud))
        self.op = op

    def _discard(self, res: int, flags: int) -> None:
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def _on_waitid(self, res: int, flags: int) -> None:
        if res == -errno.ECHILD:
            self._close_pidfd()
            self._unknown_child()
            return
        if res < 0:
            # The kernel refused this form of waitid: wait on the pidfd instead.
            self._arm_poll(self.loop._proactor)
            return
        code = int.from_bytes(ffi.buffer(self.info, 12)[8:12], "little", signed=True)
        status = int.from_bytes(ffi.buffer(self.info, 28)[24:28], "little", signed=True)
        self._close_pidfd()
        self._exited(status if code == _CLD_EXITED else -status)

    def _on_poll(self, res: int, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self._close_pidfd()
            self._unknown_child()
            return
        if pid == 0 and res >= 0:
            # Readable but not yet reapable: look again rather than invent a
            # return code (the pidfd stays ours until the exit is seen).
            self._arm_poll(self.loop._proactor)
            return
        if pid == 0:
            # The poll itself failed: there is nothing left to wait with.
            logger.error("Cannot watch child process pid %d (%s), "
                         "will report returncode 255", self.pid, os.strerror(-res))
            self._close_pidfd()
            self._exited(255)
            return
        self._close_pidfd()
        self._exited(os.waitstatus_to_exitcode(status))

    def _unknown_child(self) -> None:
        # Reaped by someone else (e.g. a foreign SIGCHLD handler), as stock asyncio.
        logger.warning("Unknown child process pid %d, will report returncode 255", self.pid)
        self._exited(255)

    def _exited(self, returncode: int) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon(self.transp._process_exited, returncode)

