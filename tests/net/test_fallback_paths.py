"""The same transport, server and cancellation tests on uringloop with optional
kernel features switched off, so the fallback paths (single-shot receive into
the transport's own buffer, single-shot accept, no DEFER_TASKRUN) stay tested
on kernels that have everything.  The test bodies are the ones the other
modules run on stock asyncio and on the default uringloop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest
import test_servers
import test_sock_cancel
import test_streams
import test_transport

import uringloop

pytestmark = pytest.mark.timeout(120)

FALLBACKS = {
    "no-multishot": {"recv_multishot", "accept_multishot", "poll_multishot"},
    "no-bufring": {"buf_ring"},
    "no-defer-taskrun": {"defer_taskrun"},
}

CASES: dict[str, Callable[[], Any]] = {
    "callbacks": test_transport.test_protocol_callbacks_in_order,
    "buffered": lambda: test_transport.test_buffered_protocol([7, 4096, 13]),
    "pause-resume": lambda: test_transport.test_pause_resume_reading_under_load("Protocol"),
    "pause-resume-buffered":
        lambda: test_transport.test_pause_resume_reading_under_load("BufferedProtocol"),
    "eof-while-paused": test_transport.test_eof_while_paused_waits_for_resume,
    "close-flushes": test_transport.test_close_flushes_pending_data,
    "nothing-after-close": test_transport.test_nothing_delivered_after_close_with_pending_writes,
    "flow-control": test_transport.test_write_buffer_limits_and_flow_control,
    "half-close": test_transport.test_half_close_between_two_transports,
    "reset-reading": test_transport.test_peer_reset_while_reading,
    "reset-writing": test_transport.test_peer_reset_while_writing,
    "abort": test_transport.test_abort_discards_pending_data,
    "server-burst": test_servers.test_backlog_is_honoured_for_bursts,
    "serve-forever": test_servers.test_serve_forever,
    "random-cancel-recv": test_sock_cancel.test_random_cancel_points_receive,
    "random-cancel-accept": test_sock_cancel.test_random_cancel_points_accept,
    "streams": test_streams.test_readline_readexactly_readuntil_at_eof,
}


@pytest.mark.parametrize("fallback", sorted(FALLBACKS))
def test_on_fallback_paths(fallback: str) -> None:
    disabled = FALLBACKS[fallback]
    try:
        uringloop.Loop(disable=disabled).close()
    except uringloop.UringUnavailableError as exc:  # pragma: no cover - depends on host
        pytest.skip(f"io_uring unavailable: {exc}")
    for name, case in CASES.items():
        contexts: list[dict[str, Any]] = []
        loop = uringloop.Loop(disable=disabled)
        assert disabled <= loop.features.disabled
        loop.set_exception_handler(lambda lp, ctx, seen=contexts: seen.append(ctx))
        try:
            with asyncio.Runner(loop_factory=lambda lp=loop: lp) as runner:
                runner.run(case())
            in_flight = loop.statistics().ops_in_flight   # after close(), as the conftest
            assert in_flight == 0, f"{name}: {in_flight} ops in flight"
        except pytest.skip.Exception:
            continue
        except BaseException as exc:
            raise AssertionError(f"{fallback}: case {name!r} failed: {exc!r}") from exc
        finally:
            if not loop.is_closed():
                loop.close()
        assert not contexts, f"{name}: exception handler called: {contexts!r}"
