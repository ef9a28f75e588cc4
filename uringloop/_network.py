"""Transport construction and serving for :class:`uringloop.Loop`.

BaseEventLoop.create_connection/create_server/start_tls/connect_accepted_socket
call the hooks defined here.  Listening sockets are served by a multishot
IORING_OP_ACCEPT (one SQE for any number of connections); without kernel
support a single-shot accept is re-armed after each completion.  TLS is
asyncio's own ``sslproto.SSLProtocol`` on top of our stream transport.
"""

from __future__ import annotations

import errno
import socket
import weakref
from asyncio import constants, selector_events, sslproto, trsock
from typing import Any

from . import _ring
from ._proactor import CallbackOp, Proactor, os_error
from ._ring import lib
from ._stream import UringSocketTransport

_F_MORE = _ring.CQE_F_MORE
_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

# Listening sockets the application passed in (create_server(sock=...),
# create_unix_server(sock=...)): possibly shared with other processes or loops,
# as every pre-fork server (gunicorn, uvicorn --workers) shares one.  Those
# get single-shot accepts.  An accept waits on the socket with an EXCLUSIVE
# wait-queue entry (the kernel wakes one waiter per connection), and a
# multishot accept keeps its entry armed at its place in the queue: the same
# ring would be woken for every connection, the other processes for none, even
# while that ring's loop is busy.  A single-shot accept is re-armed after each
# connection, at the tail of the queue, which spreads connections as epoll does.
# (Any object: gunicorn passes its own socket wrappers.)
_PASSED_IN: weakref.WeakSet[Any] = weakref.WeakSet()


def mark_passed_in(sock: Any) -> None:
    if sock is not None:
        try:
            _PASSED_IN.add(sock)
        except TypeError:   # not weak-referenceable: cannot be marked (multishot)
            pass


class _Acceptor:
    """The accept op of one listening socket and what to do with each connection.

    Ownership: ``op`` (the accept in flight, multishot or not) holds ``sock``;
    a connection that completes after serving stopped is closed at once.
    """

    __slots__ = ("loop", "sock", "args", "op", "stopped", "multishot")

    def __init__(self, loop: Any, sock: socket.socket, args: tuple[Any, ...]) -> None:
        self.loop = loop
        self.sock = sock
        self.args = args   # protocol_factory, sslcontext, server, backlog, timeouts
        self.op: CallbackOp | None = None
        self.stopped = False
        try:
            passed_in = sock in _PASSED_IN
        except TypeError:
            passed_in = False
        self.multishot = loop._proactor.ring.features.accept_multishot and not passed_in

    def arm(self) -> None:
        proactor: Proactor = self.loop._proactor
        multishot = self.multishot
        op = CallbackOp(self.on_accept, self.sock, multishot=multishot,
                        on_discard=_close_accepted)
        ud = proactor.register(op)
        ret = lib.ul_prep_accept(proactor._ptr, self.sock.fileno(), _ring.ffi.NULL,
                                 _ring.ffi.NULL, _ACCEPT_FLAGS, 1 if multishot else 0, ud)
        proactor.submit_prepared(op, ret)
        self.op = op

    def stop(self) -> None:
        self.stopped = True
        if self.op is not None:
            self.loop._proactor.cancel(self.op.ud)

    def on_accept(self, res: int, flags: int) -> None:
        final = not (flags & _F_MORE) or not self.op or not self.op.multishot
        if final:
            self.op = None
        if res >= 0:
            if self.stopped or self.loop.is_closed():
                socket.close(res)
            else:
                self.loop._accept_connection_fd(self.sock, res, *self.args)
        elif -res in _OUT_OF_RESOURCES and not self.stopped:
            # As CPython's selector loop: report, pause accepting, retry later.
            self.loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": os_error(res),
                "socket": trsock.TransportSocket(self.sock),
            })
            if self.op is not None:
                self.loop._proactor.cancel(self.op.ud)
            self.stopped = True
            self.loop.call_later(constants.ACCEPT_RETRY_DELAY, self.resume)
            return
        if self.op is None and not self.stopped and not self.loop.is_closed():
            self.arm()

    def resume(self) -> None:
        """Accept again after an out-of-resources pause, unless serving stopped meanwhile
        (a closed server's socket must not be re-armed: EBADF, re-armed forever)."""
        if self.loop.is_closed() or self.loop._proactor.acceptors.get(self.sock) is not self:
            return
        self.stopped = False
        if self.op is None:
            self.arm()


def _close_accepted(res: int, flags: int) -> None:
    if res >= 0:
        socket.close(res)


class NetworkMixin:
    """The BaseEventLoop transport hooks, on the ring."""

    _proactor: Proactor
    _unix_server_sockets: dict[socket.socket, int]

    async def create_server(self, protocol_factory: Any, host: Any = None, port: Any = None,
                            **kwargs: Any) -> Any:
        mark_passed_in(kwargs.get("sock"))
        return await super().create_server(  # type: ignore[misc]
            protocol_factory, host, port, **kwargs)

    def _make_socket_transport(self, sock: socket.socket, protocol: Any, waiter: Any = None,
                               *, extra: Any = None, server: Any = None) -> Any:
        return UringSocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: Any, sslcontext: Any,
                            waiter: Any = None, *, server_side: bool = False,
                            server_hostname: str | None = None, extra: Any = None,
                            server: Any = None,
                            ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
                            ) -> Any:
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        UringSocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _start_serving(self, protocol_factory: Any, sock: socket.socket,
                       sslcontext: Any = None, server: Any = None, backlog: int = 100,
                       ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
                       ) -> None:
        self._check_closed()  # type: ignore[attr-defined]
        old = self._proactor.acceptors.get(sock)
        if old is not None and not old.stopped:
            return
        acceptor = _Acceptor(self, sock, (protocol_factory, sslcontext, server, backlog,
                                          ssl_handshake_timeout, ssl_shutdown_timeout))
        self._proactor.acceptors[sock] = acceptor
        acceptor.arm()

    def _stop_serving(self, sock: socket.socket) -> None:
        unix_path = None
        if sock in self._unix_server_sockets:   # create_unix_server(cleanup_socket=True)
            unix_path = sock.getsockname()
        acceptor = self._proactor.acceptors.pop(sock, None)
        if acceptor is not None:
            acceptor.stop()
            self._proactor.flush()   # the kernel holds the file before the fd goes
        sock.close()
        if unix_path is not None:
            self._cleanup_unix_server_socket(sock, unix_path)  # type: ignore[attr-defined]

    def _accept_connection_fd(self, listener: socket.socket, fd: int, protocol_factory: Any,
                              sslcontext: Any, server: Any, backlog: int,
                              ssl_handshake_timeout: float | None,
                              ssl_shutdown_timeout: float | None) -> None:
        conn = socket.socket(listener.family, listener.type, listener.proto, fileno=fd)
        if self._debug:  # type: ignore[attr-defined]
            selector_events.logger.debug("%r got a new connection: %r", server, conn)
        if sslcontext:
            self.create_task(self._accept_connection2(  # type: ignore[attr-defined]
                protocol_factory, conn, None, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout))
            return
        protocol = transport = None
        try:
            protocol = protocol_factory()
            transport = self._make_socket_transport(conn, protocol, server=server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            else:
                transport.close()
            if self._debug:  # type: ignore[attr-defined]
                context = {"message": "Error on transport creation for incoming connection",
                           "exception": exc}
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                self.call_exception_handler(context)  # type: ignore[attr-defined]

    # The TLS accept path is CPython's own (it only calls our hooks).
    _accept_connection2 = selector_events.BaseSelectorEventLoop._accept_connection2
