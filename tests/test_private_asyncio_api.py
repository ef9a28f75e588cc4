"""Every private asyncio attribute uringloop relies on, pinned.

docs/design.md lists them; if a new CPython renames or reshapes one, this
test fails loudly here instead of uringloop failing obscurely at run time.
"""

from __future__ import annotations

import asyncio
import inspect
from asyncio import (base_events, constants, futures, protocols, selector_events, sslproto,
                     transports, trsock, unix_events)

import pytest

import uringloop

UNIX_LOOP = unix_events._UnixSelectorEventLoop

# (owner, attribute name, parameters it must accept, in order, after self)
BORROWED_METHODS = [
    (UNIX_LOOP, "add_signal_handler", ["sig", "callback", "args"]),
    (UNIX_LOOP, "remove_signal_handler", ["sig"]),
    (UNIX_LOOP, "_handle_signal", ["sig"]),
    (UNIX_LOOP, "_check_signal", ["sig"]),
    (UNIX_LOOP, "_process_self_data", ["data"]),
    (UNIX_LOOP, "create_unix_connection", ["protocol_factory", "path"]),
    (UNIX_LOOP, "create_unix_server", ["protocol_factory", "path"]),
    (UNIX_LOOP, "_sock_sendfile_native", ["sock", "file", "offset", "count"]),
    (UNIX_LOOP, "_sock_sendfile_native_impl",
     ["fut", "registered_fd", "sock", "fileno", "offset", "count", "blocksize",
      "total_sent"]),
    (UNIX_LOOP, "_sock_sendfile_update_filepos", ["fileno", "offset", "total_sent"]),
    (UNIX_LOOP, "_sock_add_cancellation_callback", ["fut", "sock"]),
    (selector_events.BaseSelectorEventLoop, "_accept_connection2",
     ["protocol_factory", "conn", "extra", "sslcontext", "server",
      "ssl_handshake_timeout", "ssl_shutdown_timeout"]),
    (selector_events.BaseSelectorEventLoop, "_sendfile_native",
     ["transp", "file", "offset", "count"]),
]

# BaseEventLoop hooks we implement or call, with the parameters BaseEventLoop passes.
# Borrowed functions uringloop calls from a method of its own rather than installs:
# _sock_sendfile_native is stock's os.sendfile path, called by _splice.py where
# splicing does not apply.
WRAPPED = {"_sock_sendfile_native"}

HOOKS = [
    ("_sock_sendfile_native", ["sock", "file", "offset", "count"]),
    ("_process_events", ["event_list"]),
    ("_make_socket_transport", ["sock", "protocol", "waiter"]),
    ("_make_ssl_transport", ["rawsock", "protocol", "sslcontext", "waiter"]),
    ("_make_datagram_transport", ["sock", "protocol", "address", "waiter", "extra"]),
    ("_make_read_pipe_transport", ["pipe", "protocol", "waiter", "extra"]),
    ("_make_write_pipe_transport", ["pipe", "protocol", "waiter", "extra"]),
    ("_make_subprocess_transport",
     ["protocol", "args", "shell", "stdin", "stdout", "stderr", "bufsize", "extra"]),
    ("_write_to_self", []),
    ("_check_closed", []),
    ("_add_callback_signalsafe", ["handle"]),
    ("_ensure_resolved", ["address"]),
    ("_run_once", []),
]

ATTRIBUTES = [
    (base_events, "_check_ssl_socket"),
    (base_events, "_set_nodelay"),
    (base_events, "_HAS_IPv6"),
    (base_events.Server, "_attach"),
    (base_events.Server, "_detach"),
    (transports, "_FlowControlMixin"),
    (protocols, "_feed_data_to_buffered_proto"),
    (futures, "_set_result_unless_cancelled"),
    (sslproto.SSLProtocol, "__init__"),
    (constants, "SSL_HANDSHAKE_TIMEOUT"),
    (constants, "SSL_SHUTDOWN_TIMEOUT"),
    (constants, "ACCEPT_RETRY_DELAY"),
    (constants, "LOG_THRESHOLD_FOR_CONNLOST_WRITES"),
    (constants, "_SendfileMode"),
    (trsock, "TransportSocket"),
    (selector_events, "_SelectorDatagramTransport"),
    # uringloop._datagram.UringDatagramTransport subclasses it and relies on:
    (selector_events._SelectorTransport, "_add_reader"),
    (selector_events._SelectorTransport, "_force_close"),
    (selector_events._SelectorTransport, "_call_connection_lost"),
    (selector_events._SelectorDatagramTransport, "_sendto_ready"),
    (selector_events, "_test_selector_event"),
    (unix_events, "_UnixReadPipeTransport"),
    (unix_events, "_UnixWritePipeTransport"),
    (unix_events, "_UnixSubprocessTransport"),
    (unix_events, "_UnixDefaultEventLoopPolicy"),
]


def _params(func: object) -> list[str]:
    sig = inspect.signature(func)  # type: ignore[arg-type]
    return [p for p in sig.parameters if p != "self"]


@pytest.mark.parametrize("owner,name,expected", BORROWED_METHODS,
                         ids=[f"{o.__name__}.{n}" for o, n, _ in BORROWED_METHODS])
def test_borrowed_method_shape(owner: type, name: str, expected: list[str]) -> None:
    func = owner.__dict__[name]
    assert _params(func)[:len(expected)] == expected
    # The borrowed function must not use zero-argument super(): it would bind to
    # a class uringloop.Loop does not derive from.
    assert "__class__" not in func.__code__.co_freevars
    # (Borrowed as is, or wrapped: then called by our own, possibly kept
    # as ``_stock_<name>``.)
    if name in WRAPPED:
        assert getattr(uringloop.Loop, name) is not func   # called by our own
    else:
        assert (getattr(uringloop.Loop, name) is func
                or getattr(uringloop.Loop, f"_stock_{name}", None) is func)


@pytest.mark.parametrize("name,expected", HOOKS, ids=[n for n, _ in HOOKS])
def test_base_event_loop_hook(name: str, expected: list[str]) -> None:
    base = getattr(base_events.BaseEventLoop, name)
    assert _params(base)[:len(expected)] == expected
    ours = getattr(uringloop.Loop, name)
    assert _params(ours)[:len(expected)] == expected


@pytest.mark.parametrize("owner,name", ATTRIBUTES,
                         ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n in ATTRIBUTES])
def test_private_attribute_exists(owner: object, name: str) -> None:
    assert hasattr(owner, name)


def test_run_once_drives_select_then_process_events() -> None:
    # Loop relies on BaseEventLoop._run_once calling self._selector.select(timeout)
    # and then self._process_events(event_list).
    src = inspect.getsource(base_events.BaseEventLoop._run_once)
    assert "self._selector.select(timeout)" in src
    assert "self._process_events(event_list)" in src


def test_ready_queue_is_a_deque_of_handles() -> None:
    loop = uringloop.Loop()
    try:
        assert hasattr(loop._ready, "append") and hasattr(loop._ready, "popleft")
    finally:
        loop.close()


def test_loop_instance_dict_stays_compact() -> None:
    # CPython keeps an instance's __dict__ as a split ("shared keys") table only
    # up to 29 attributes; past that every self.x in BaseEventLoop's hot paths
    # becomes a full dict lookup (measured: +12% instructions per call_soon
    # iteration).  BaseEventLoop itself sets 19-20; this is our whole budget.
    loop = uringloop.Loop()
    try:
        assert len(vars(loop)) <= 29, sorted(vars(loop))
    finally:
        loop.close()


@pytest.mark.parametrize("protocol", ["Protocol", "BufferedProtocol"])
def test_stream_transport_instance_dict_stays_compact(protocol: str) -> None:
    # The same limit for the stream transport, whose attributes the receive and
    # write hot paths read per message (measured at 30: +3% instructions per
    # echo round trip).
    import socket

    async def main() -> int:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        transport, _ = await loop.create_connection(getattr(asyncio, protocol), sock=a)
        await asyncio.sleep(0)
        b.send(b"x")
        await asyncio.sleep(0.01)
        n = len(vars(transport))
        transport.close()
        b.close()
        await asyncio.sleep(0)
        return n

    assert uringloop.run(main()) <= 29


def test_selector_transport_state_attributes() -> None:
    # UringDatagramTransport reads these instance attributes of CPython's
    # _SelectorTransport (set in its __init__).
    import socket

    loop = uringloop.Loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tr = selector_events._SelectorDatagramTransport(loop, sock, asyncio.DatagramProtocol())
        for name in ("_paused", "_closing", "_conn_lost", "_sock", "_sock_fd", "_protocol"):
            assert hasattr(tr, name), name
        tr.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        sock.close()


def test_handle_layout_the_accelerator_builds() -> None:
    # _speedups.loop_call_soon builds asyncio.Handle objects itself and runs
    # ready Handles/TimerHandles as Handle._run does, by the slots below; if a
    # CPython changes them it silently falls back to the Python paths, which
    # would be correct but slow: fail here instead.
    from asyncio import events

    from uringloop import _loop

    assert _loop.HANDLES_IN_C
    assert set(events.Handle.__slots__) >= {
        "_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context"}
    assert set(events.TimerHandle.__slots__) >= {"_when", "_scheduled"}
    assert "_run" not in vars(events.TimerHandle)
    # Handle.__init__ sets nothing the C constructor would miss.
    loop = uringloop.Loop()
    try:
        stock = events.Handle(print, (1,), loop, None)
        fast = loop.call_soon(print, 1)
        for name in events.Handle.__slots__:
            if name == "__weakref__":
                continue
            assert hasattr(stock, name) == hasattr(fast, name), name
        fast.cancel()
        stock.cancel()
        # The same for the TimerHandles call_at builds (and its timer heap
        # compares by _when): every slot TimerHandle.__init__ sets.
        assert _loop.TIMERS_IN_C
        stock_timer = events.TimerHandle(5.0, print, (1,), loop, None)
        fast_timer = loop.call_at(5.0, print, 1)
        for name in (*events.Handle.__slots__, *events.TimerHandle.__slots__):
            if name == "__weakref__":
                continue
            assert hasattr(stock_timer, name) == hasattr(fast_timer, name), name
        assert fast_timer._scheduled and not stock_timer._scheduled
        fast_timer.cancel()
    finally:
        loop.close()


def test_loop_state_the_accelerator_reads_is_in_slots() -> None:
    # The C iteration reads these at their slot offsets (docs/design.md §5).
    from uringloop import _proactor, _stream

    loop = uringloop.Loop()
    try:
        for name in ("_ready", "_scheduled", "_stopping", "_timer_cancelled_count",
                     "_clock_resolution", "_debug", "_closed", "_proactor"):
            assert name in uringloop.Loop.__slots__, name
            assert name not in vars(loop), name
        for name in ("_harvested", "_ops", "_undispatched", "recycle", "sleeping"):
            assert name in _proactor.Proactor.__slots__, name
        for name in ("_closing", "_paused", "_protocol", "_sock", "_send_op"):
            assert name in _stream.UringSocketTransport.__slots__, name
    finally:
        loop.close()
