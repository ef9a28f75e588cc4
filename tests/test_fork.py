"""A loop inherited across fork() refuses use in the child and keeps working in the parent.

After fork() the child shares the parent's ring mappings: one write from the
child to the SQ/CQ indices or to a provided-buffer ring corrupts the
parent's loop.  The at-fork hook in ``uringloop._ring`` resets every ring in
the child (mappings dropped, fd closed), so using the inherited loop raises a
RuntimeError naming fork, closing it only releases the child's copies, and a
new loop created in the child works.

The child side runs in a real ``os.fork()`` child: it reports through a pipe
(JSON) and its exit code; the parent then does real work on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import select
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringloop

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

# A guard against a hung child, not a timing assertion: the child is killed and
# the test fails if it has not reported by then.
CHILD_DEADLINE = 60.0


@contextlib.contextmanager
def _forking() -> Iterator[None]:
    # 3.12+ warns when a multi-threaded process forks (pytest's faulthandler
    # watchdog is a thread).  That warning is about the test process, not
    # uringloop, and under filterwarnings=error it would be raised in the
    # parent *after* the child exists.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork",
                                category=DeprecationWarning)
        yield


def _child_main(w: int, fn: Callable[[], Any]) -> None:
    """The child's whole life: run fn, report through w, never return."""
    code = 3
    try:
        try:
            result: dict[str, Any] = {"ok": fn()}
            code = 0
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            result = {"error": traceback.format_exc()}
            code = 1
        data = json.dumps(result).encode()
        while data:
            data = data[os.write(w, data):]
    finally:
        os._exit(code)


def _collect(pid: int, r: int) -> Any:
    """Read the child's report, reap it, and return its result (or fail)."""
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([r], [], [], CHILD_DEADLINE)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung (killed after the deadline)")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    report = json.loads(b"".join(chunks) or b"{}")
    if code != 0:
        pytest.fail(f"child exited with {code} (negative: killed by that signal): "
                    f"{report.get('error', report)}")
    return report["ok"]


def in_child(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child; return its JSON-able result."""
    r, w = os.pipe()
    with _forking():
        pid = os.fork()
    if pid == 0:
        os.close(r)
        _child_main(w, fn)
    os.close(w)
    return _collect(pid, r)


def raises_fork_error(call: Callable[[], Any]) -> str:
    """In the child: call must raise the RuntimeError that names fork."""
    try:
        call()
    except RuntimeError as exc:
        msg = str(exc)
        assert "fork" in msg, msg
        return msg
    raise AssertionError(f"{call} did not raise")


# ---------------------------------------------------------------------------
# the parent side


async def _echo_roundtrip(payload: bytes) -> bytes:
    """Real I/O on the running loop: a loopback TCP echo through a stream server."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        data = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
    return data


async def _threadsafe_wakeup() -> str:
    """A cross-thread wakeup: the self-pipe read in flight on the ring completes."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    t = threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, "woken"))
    t.start()
    try:
        return await fut
    finally:
        t.join()


def assert_parent_loop_works(loop: uringloop.Loop) -> None:
    """The parent's ring is intact and still does real work."""
    ring = loop._proactor.ring
    assert not ring.forked
    # Had the child submitted through the shared SQ, the kernel's SQ head would
    # have moved past our tail.
    assert ring.stats()["sq_pending"] == 0
    before = loop.statistics()
    payload = os.urandom(64 * 1024)
    assert loop.run_until_complete(asyncio.wait_for(_echo_roundtrip(payload),
                                                    CHILD_DEADLINE)) == payload
    assert loop.run_until_complete(asyncio.wait_for(_threadsafe_wakeup(),
                                                    CHILD_DEADLINE)) == "woken"
    after = loop.statistics()
    assert after.cqes_reaped > before.cqes_reaped


@pytest.fixture(params=[(), ("defer_taskrun",)], ids=["default", "no-defer_taskrun"])
def parent_loop(request: pytest.FixtureRequest) -> Iterator[uringloop.Loop]:
    """A uringloop loop that has run real I/O (ring enabled, buffer ring in place).

    Also without DEFER_TASKRUN: a SINGLE_ISSUER ring makes the kernel itself
    refuse io_uring_enter/register from the child (EEXIST); a COOP_TASKRUN
    ring does not, so there only uringloop's own fork handling protects it.
    """
    loop = uringloop.Loop(disable=request.param)
    try:
        assert loop.run_until_complete(_echo_roundtrip(b"warm-up")) == b"warm-up"
        yield loop
    finally:
        loop.close()
    assert loop.statistics().ops_in_flight == 0


# ---------------------------------------------------------------------------
# the child refuses the inherited loop


def _op_run_until_complete(loop: uringloop.Loop) -> None:
    coro = asyncio.sleep(0)
    try:
        loop.run_until_complete(coro)
    finally:
        coro.close()


def _op_create_task(loop: uringloop.Loop) -> None:
    coro = asyncio.sleep(0)
    try:
        loop.create_task(coro)
    finally:
        coro.close()


CHILD_OPS: dict[str, Callable[[uringloop.Loop], Any]] = {
    "run_until_complete": _op_run_until_complete,
    "run_forever": lambda loop: loop.run_forever(),
    "call_soon": lambda loop: loop.call_soon(print, "never"),
    "call_later": lambda loop: loop.call_later(0.01, print, "never"),
    "call_soon_threadsafe": lambda loop: loop.call_soon_threadsafe(print, "never"),
    "create_task": _op_create_task,
    "create_future_and_run": lambda loop: loop.run_until_complete(loop.create_future()),
    "statistics": lambda loop: loop.statistics(),
}


@pytest.mark.parametrize("op", sorted(CHILD_OPS))
def test_inherited_loop_refuses_use_in_child(parent_loop: uringloop.Loop, op: str) -> None:
    def child() -> dict[str, Any]:
        msg = raises_fork_error(lambda: CHILD_OPS[op](parent_loop))
        # Still refused on a second try, and closing afterwards is quiet.
        raises_fork_error(lambda: CHILD_OPS[op](parent_loop))
        parent_loop.close()
        return {"msg": msg, "closed": parent_loop.is_closed()}

    result = in_child(child)
    assert str(os.getpid()) in result["msg"]   # names the process that owns the ring
    assert "new event loop" in result["msg"]    # and the fix
    assert result["closed"] is True
    assert_parent_loop_works(parent_loop)


def test_child_close_is_quiet_and_leaves_parent_ring_alone(
        parent_loop: uringloop.Loop) -> None:
    """close() in the child releases only the child's copies (no hang, no unregister)."""
    parent_fd = parent_loop._proactor.ring.fd

    def child() -> dict[str, Any]:
        ring = parent_loop._proactor.ring
        assert ring.forked and not ring.closed
        # The at-fork hook already closed the child's copy of the ring fd.
        fd_open = os.path.exists(f"/proc/self/fd/{parent_fd}") and \
            "io_uring" in os.readlink(f"/proc/self/fd/{parent_fd}")
        parent_loop.close()
        parent_loop.close()          # idempotent
        return {"fd_open": fd_open, "closed": parent_loop.is_closed(),
                "ring_closed": ring.closed}

    result = in_child(child)
    assert result == {"fd_open": False, "closed": True, "ring_closed": True}
    assert_parent_loop_works(parent_loop)


def test_new_loop_in_child_works(parent_loop: uringloop.Loop) -> None:
    def child() -> dict[str, Any]:
        payload = os.urandom(32 * 1024)
        with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
            loop = runner.get_loop()
            assert isinstance(loop, uringloop.Loop)
            assert loop._proactor.ring.pid == os.getpid()
            echoed = runner.run(_echo_roundtrip(payload))
            woken = runner.run(_threadsafe_wakeup())
            reaped = loop.statistics().cqes_reaped
        # The inherited loop is still refused, and can be closed after.
        raises_fork_error(lambda: parent_loop.call_soon(print))
        parent_loop.close()
        return {"echo_ok": echoed == payload, "woken": woken, "reaped": reaped}

    result = in_child(child)
    assert result["echo_ok"] is True
    assert result["woken"] == "woken"
    assert result["reaped"] > 0
    assert_parent_loop_works(parent_loop)


def test_fork_inside_running_loop(parent_loop: uringloop.Loop) -> None:
    """os.fork() from a coroutine: the child's copy of the running loop refuses to go on."""
    parent_pid = os.getpid()
    r, w = os.pipe()

    async def forks() -> int:
        with _forking():
            return os.fork()

    try:
        pid = parent_loop.run_until_complete(forks())
    except BaseException:
        if os.getpid() == parent_pid:
            os.close(r)
            os.close(w)
            raise
        exc_text = traceback.format_exc()

        def child() -> dict[str, Any]:
            # Back out of the inherited run: running loop cleared, loop closable.
            parent_loop.close()
            assert asyncio._get_running_loop() is None
            return {"refused": "after fork()" in exc_text, "tb": exc_text[-2000:]}

        os.close(r)
        _child_main(w, child)
    if pid == 0:   # the child came back out of the loop without an error
        os.close(r)
        _child_main(w, lambda: (_ for _ in ()).throw(
            AssertionError("the inherited running loop did not refuse to go on")))
    os.close(w)
    result = _collect(pid, r)
    assert result["refused"], result["tb"]
    assert_parent_loop_works(parent_loop)


def test_signal_in_child_does_not_reach_parent_loop(parent_loop: uringloop.Loop) -> None:
    """The child inherits the wakeup fd (the parent's self-pipe); its signals stay its own."""
    seen: list[str] = []
    parent_loop.add_signal_handler(signal.SIGUSR1, seen.append, "usr1")
    parent_loop.add_signal_handler(signal.SIGUSR2, seen.append, "usr2")
    try:
        def child() -> bool:
            os.kill(os.getpid(), signal.SIGUSR1)   # handled (or ignored) here only
            return True

        assert in_child(child) is True

        async def marker() -> None:
            # Bytes on the self-pipe are handled in order: by the time the SIGUSR2
            # handler runs, any SIGUSR1 byte the child wrote has been handled too.
            os.kill(os.getpid(), signal.SIGUSR2)
            while "usr2" not in seen:
                await asyncio.sleep(0.001)

        parent_loop.run_until_complete(asyncio.wait_for(marker(), CHILD_DEADLINE))
        assert seen == ["usr2"]
    finally:
        parent_loop.remove_signal_handler(signal.SIGUSR1)
        parent_loop.remove_signal_handler(signal.SIGUSR2)
    assert_parent_loop_works(parent_loop)


def _raw_fork() -> int:
    # fork(2) straight from libc, holding the GIL (PyDLL): no Python at-fork
    # hooks run, as when a C extension forks.
    libc = ctypes.PyDLL(None, use_errno=True)
    pid = libc.fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork")
    return int(pid)


@pytest.mark.skipif(sys.platform != "linux", reason="libc fork via ctypes")
def test_raw_fork_without_hooks(parent_loop: uringloop.Loop) -> None:
    """Even without the at-fork hook, running refuses and close() spares the parent."""
    r, w = os.pipe()
    with _forking():
        pid = _raw_fork()
    if pid == 0:
        os.close(r)

        def child() -> dict[str, Any]:
            ring = parent_loop._proactor.ring
            hook_ran = ring.forked
            msg = raises_fork_error(lambda: _op_run_until_complete(parent_loop))
            parent_loop.close()
            return {"hook_ran": hook_ran, "msg": msg, "closed": parent_loop.is_closed()}

        _child_main(w, child)
    os.close(w)
    result = _collect(pid, r)
    assert result["hook_ran"] is False
    assert result["closed"] is True
    # The child closed the loop through the parent's (still open) ring fd
    # path; the parent's buffer ring must still be registered: stream I/O works.
    assert_parent_loop_works(parent_loop)


def test_unused_loop_fork() -> None:
    """A loop that never ran (ring still R_DISABLED) is refused in the child too."""
    loop = uringloop.new_event_loop()
    try:
        def child() -> str:
            msg = raises_fork_error(lambda: _op_run_until_complete(loop))
            loop.close()
            return msg

        assert "fork" in in_child(child)
        assert loop.run_until_complete(_threadsafe_wakeup()) == "woken"
    finally:
        loop.close()
