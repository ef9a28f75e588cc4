"""Signals on uringloop and stock asyncio.

In process: add_signal_handler/remove_signal_handler with SIGUSR1/SIGUSR2 sent
by os.kill from the loop's thread or from other threads, while the loop sleeps
or spins; argument checking exactly as the stock Unix loop does it.

In child processes (tests/loop/scripts/): Ctrl-C against a loop blocked in the
kernel, with and without a SIGINT handler, and the foundation issue's
acceptance script.  The uringloop child must behave exactly like the stock
child: same stdout lines, same return code, same last line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import uringloop

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

GUARD = 30.0
# How long a busy loop spins waiting for a signal callback (a healthy loop
# needs a few iterations); only a broken loop ever reaches it.
SPIN_GUARD = 5.0
SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(autouse=True)
def _restore_signal_state() -> Iterator[None]:
    """Whatever a failing test leaves behind, SIGUSR1/2 and the wakeup fd are reset."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)


@pytest.fixture
def loop(loop_factory: LoopFactory) -> Iterator[asyncio.AbstractEventLoop]:
    lp = loop_factory()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.run_until_complete(lp.shutdown_default_executor())
            lp.close()


def _run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


def _wakeup_fd_is_cleared() -> bool:
    # set_wakeup_fd returns the previous fd; -1 means nobody had set one.
    previous = signal.set_wakeup_fd(-1)
    if previous != -1:
        signal.set_wakeup_fd(previous)
    return previous == -1


# ---------------------------------------------------------------------------
# add_signal_handler / remove_signal_handler in process
# ---------------------------------------------------------------------------


def test_handler_runs_with_args_from_os_kill(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[Any, ...]:
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda *a: fut.set_result(a), "x", 2)
        os.kill(os.getpid(), signal.SIGUSR1)
        return await fut

    assert _run(loop, main()) == ("x", 2)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_handler_wakes_sleeping_loop_from_timer_thread(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[str]:
        events: list[str] = []
        fut = loop.create_future()
        loop.call_later(3600, events.append, "long timer fired")
        loop.add_signal_handler(signal.SIGUSR1, fut.set_result, "signalled")
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        try:
            events.append(await fut)
        finally:
            timer.join(GUARD)
        return events

    assert _run(loop, main()) == ["signalled"]


def test_signal_received_while_loop_not_running(loop: asyncio.AbstractEventLoop) -> None:
    # The wakeup byte waits in the self-pipe until the loop runs again.
    got: list[str] = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "late")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert got == []

    async def main() -> None:
        for _ in range(100):
            if got:
                return
            await asyncio.sleep(0.001)

    _run(loop, main())
    assert got == ["late"]


def test_readding_replaces_and_remove_reports(loop: asyncio.AbstractEventLoop) -> None:
    calls: list[str] = []

    async def main() -> None:
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")
        loop.add_signal_handler(signal.SIGUSR1, lambda: (calls.append("second"),
                                                         fut.set_result(None)))
        os.kill(os.getpid(), signal.SIGUSR1)
        await fut

    _run(loop, main())
    assert calls == ["second"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert loop.remove_signal_handler(signal.SIGUSR2) is False
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert _wakeup_fd_is_cleared()


def test_two_signals_two_handlers(loop: asyncio.AbstractEventLoop) -> None:
    got: list[str] = []

    async def main() -> None:
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
        loop.add_signal_handler(signal.SIGUSR2, lambda: (got.append("usr2"),
                                                         done.set_result(None)))
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        await done

    _run(loop, main())
    assert got == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    # One handler left: the wakeup fd stays until the last one goes.
    assert not _wakeup_fd_is_cleared()
    assert loop.remove_signal_handler(signal.SIGUSR2)
    assert _wakeup_fd_is_cleared()


def test_close_removes_handlers(loop: asyncio.AbstractEventLoop) -> None:
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    assert _wakeup_fd_is_cleared()


def test_handler_exception_goes_to_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    def bad() -> None:
        raise ValueError("in signal handler")

    async def main() -> None:
        loop.add_signal_handler(signal.SIGUSR1, bad)
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR2, fut.set_result, None)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        await fut

    _run(loop, main())
    assert len(seen) == 1
    assert seen[0]["message"].startswith("Exception in callback ")
    assert isinstance(seen[0]["exception"], ValueError)


def test_bad_signal_arguments(loop: asyncio.AbstractEventLoop) -> None:
    async def coro_fn() -> None:
        pass

    with pytest.raises(TypeError, match="sig must be an int, not 'x'"):
        loop.add_signal_handler("x", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sig must be an int, not 'x'"):
        loop.remove_signal_handler("x")  # type: ignore[arg-type]
    for bad in (0, -1, 100_000):
        with pytest.raises(ValueError, match=f"invalid signal number {bad}"):
            loop.add_signal_handler(bad, lambda: None)
        with pytest.raises(ValueError, match=f"invalid signal number {bad}"):
            loop.remove_signal_handler(bad)
    for uncatchable in (signal.SIGKILL, signal.SIGSTOP):
        with pytest.raises(RuntimeError, match=f"sig {int(uncatchable)} cannot be caught"):
            loop.add_signal_handler(uncatchable, lambda: None)
    with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
        loop.add_signal_handler(signal.SIGUSR1, coro)  # type: ignore[arg-type]
    coro.close()
    # Nothing was left half-installed, and the loop still works.
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert _wakeup_fd_is_cleared()
    assert loop.run_until_complete(asyncio.sleep(0, result="ok")) == "ok"


def test_add_signal_handler_from_non_main_thread(loop_factory: LoopFactory) -> None:
    errors: list[BaseException] = []
    main_loop = loop_factory()

    def worker() -> None:
        # Both a loop made in this thread and the main thread's loop refuse.
        own = loop_factory()
        try:
            for lp in (own, main_loop):
                try:
                    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    errors.append(exc)
        finally:
            own.close()

    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join(GUARD)
        assert len(errors) == 2
        for exc in errors:
            assert type(exc) is RuntimeError
            assert "main thread" in str(exc)
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        assert main_loop.run_until_complete(asyncio.sleep(0, result=1)) == 1
    finally:
        main_loop.close()


def test_signal_storm_while_sleeping(loop: asyncio.AbstractEventLoop) -> None:
    """200 SIGUSR1 from two threads, then one SIGUSR2 as the end marker.

    Standard signals coalesce while pending, so the handler runs between 1 and
    200 times; every one that ran is accounted for before the end marker.
    Each delivered signal is one byte in the self-pipe, which holds about 280
    one-byte writes (AF_UNIX accounting): a bigger storm could overflow it
    before the loop drains it, and then CPython drops signal numbers under
    stock asyncio too ("Exception ignored ... BlockingIOError").
    """
    n_per_thread = 100
    count = [0]

    async def main() -> int:
        done = loop.create_future()
        loop.call_later(3600, done.set_exception, AssertionError("not woken"))
        loop.add_signal_handler(signal.SIGUSR1, lambda: count.__setitem__(0, count[0] + 1))
        loop.add_signal_handler(signal.SIGUSR2, done.set_result, "end")
        pid = os.getpid()
        start = threading.Barrier(2)

        def storm() -> None:
            start.wait(GUARD)
            for _ in range(n_per_thread):
                os.kill(pid, signal.SIGUSR1)

        threads = [threading.Thread(target=storm) for _ in range(2)]
        for t in threads:
            t.start()

        def finish() -> None:
            for t in threads:
                t.join(GUARD)
            os.kill(pid, signal.SIGUSR2)

        await loop.run_in_executor(None, finish)
        assert await done == "end"
        for _ in range(5):
            await asyncio.sleep(0)
        return count[0]

    handled = _run(loop, main())
    assert 1 <= handled <= 2 * n_per_thread
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR2)


def test_signal_handled_while_loop_is_busy(loop: asyncio.AbstractEventLoop) -> None:
    # A loop that never sleeps (a task yielding with sleep(0)) must still
    # run signal callbacks: stock asyncio polls its self-pipe every iteration.
    got: list[str] = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "busy")

    async def spin() -> bool:
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + SPIN_GUARD
        while time.monotonic() < deadline:
            if got:
                return True
            await asyncio.sleep(0)
        return False

    assert loop.run_until_complete(spin()), "signal callback never ran while the loop was busy"
    assert got == ["busy"]


def test_signal_from_other_thread_while_loop_is_busy(loop: asyncio.AbstractEventLoop) -> None:
    got: list[str] = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "busy")

    async def spin() -> bool:
        t = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR1))
        t.start()
        deadline = time.monotonic() + SPIN_GUARD
        try:
            while time.monotonic() < deadline:
                if got:
                    return True
                await asyncio.sleep(0)
            return False
        finally:
            t.join(GUARD)

    assert loop.run_until_complete(spin()), "signal callback never ran while the loop was busy"


def _assert_woken_from_thread(loop: asyncio.AbstractEventLoop, when: str) -> None:
    """A sleeping loop runs a call_soon_threadsafe() callback.

    A lost self-pipe completion leaves the loop asleep (until the guard
    timer): the calling thread's bounded wait for its callback then expires.
    """
    woke = loop.create_future()

    def finish() -> None:
        if not woke.done():
            woke.set_result(None)

    guard = loop.call_later(2 * SPIN_GUARD, finish)
    ran = threading.Event()
    in_time: list[bool] = []

    def caller() -> None:
        time.sleep(0.02)   # let the loop fall asleep
        loop.call_soon_threadsafe(ran.set)
        in_time.append(ran.wait(SPIN_GUARD))
        loop.call_soon_threadsafe(finish)

    t = threading.Thread(target=caller)
    t.start()
    try:
        loop.run_until_complete(woke)
    finally:
        t.join(GUARD)
    guard.cancel()
    assert in_time == [True], f"loop not woken from another thread {when}"


def test_keyboard_interrupt_racing_completions_loses_nothing(
        loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C (a Python-level handler raising KeyboardInterrupt) that lands
    just as the sleeping loop is woken by a completion.

    Under stock asyncio the interrupted select() loses nothing: epoll is level
    triggered and reports the self-pipe again.  A ring's completions are
    consumed when harvested, so a loop must not drop the ones harvested by the
    call the interrupt cut short: afterwards the loop must still be woken by
    call_soon_threadsafe, and close() must find nothing left in flight.
    """
    armed = [False]

    def on_usr1(signum: int, frame: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, on_usr1)
    pid = os.getpid()
    for round_no in range(10):
        never = loop.create_future()
        guard = loop.call_later(GUARD, never.set_result, "guard")

        def wake_and_interrupt() -> None:
            time.sleep(0.02)   # let the loop fall asleep (not required, makes the race likely)
            loop.call_soon_threadsafe(lambda: None)   # a completion on the self-pipe
            os.kill(pid, signal.SIGUSR1)              # and the interrupt right behind it

        armed[0] = True
        t = threading.Thread(target=wake_and_interrupt)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                loop.run_until_complete(never)
        finally:
            t.join(GUARD)
            armed[0] = False
        guard.cancel()
        never.cancel()

        _assert_woken_from_thread(loop, f"after the interrupt of round {round_no}")
    loop.close()
    # (asyncio's own slow-callback warnings, which a loaded machine can cause in
    # debug mode, are not what this is about.)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            or (r.levelno >= logging.WARNING and r.name != "asyncio")] == []


# ---------------------------------------------------------------------------
# child processes: Ctrl-C, and the acceptance script
# ---------------------------------------------------------------------------


def _uringloop_available() -> None:
    try:
        uringloop.Loop().close()
    except uringloop.UringUnavailableError as exc:  # pragma: no cover - host dependent
        pytest.skip(f"io_uring unavailable: {exc}")


def _main_thread_state(pid: int) -> str:
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_blocked(pid: int) -> None:
    """Wait until the child's main thread sleeps in a system call (state S)."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if _main_thread_state(pid) == "S":
            return
        time.sleep(0.002)
    pytest.fail(f"child {pid} never blocked in the kernel")


class _LineReader:
    """Lines from a child's stdout, each read with a deadline (no hang on a dead child)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.lines: list[str] = []

    def until(self, wanted: str) -> None:
        deadline = time.monotonic() + GUARD
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                self.lines.append(raw.decode())
                if self.lines[-1] == wanted:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"child did not print {wanted!r}; got {self.lines!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    pytest.fail(f"child exited before printing {wanted!r}; got {self.lines!r}")
                self.buf += chunk

    def rest(self, more: bytes) -> list[str]:
        tail = (self.buf + more).decode().splitlines()
        return self.lines + tail


def _run_child(script: str, *args: str, sigints: int = 0
               ) -> tuple[list[str], int, str]:
    """Run a child, send it `sigints` Ctrl-Cs (one per "ready" it prints, each
    once it sleeps in the kernel); return (stdout lines, return code, last
    stderr line)."""
    # Without asyncio debug mode: its slow-callback warnings (stderr) depend on
    # the machine's load, and the comparison must not.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / script), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        reader = _LineReader(proc)
        for _ in range(sigints):
            reader.until("ready")
            _wait_blocked(proc.pid)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err_lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    return reader.rest(out), proc.returncode, (err_lines[-1] if err_lines else "")


CTRL_C_SCENARIOS: dict[str, tuple[int, list[str], int | None, str]] = {
    # scenario: (Ctrl-Cs sent, stdout expected from stock asyncio, return code
    #            (None: whatever an unhandled KeyboardInterrupt gives), last stderr line)
    "runner-sleep": (1, ["ready", "main cancelled", "KeyboardInterrupt; loop closed: True"],
                     3, ""),
    "runner-future": (1, ["ready", "main cancelled; future cancelled: True",
                          "KeyboardInterrupt; loop closed: True"], 3, ""),
    "runner-twice": (2, ["ready", "first cancel ignored", "ready",
                         "cancelled again during shutdown",
                         "KeyboardInterrupt; loop closed: True"], 3, ""),
    "run-uncaught": (1, ["ready", "main cancelled"], None, "KeyboardInterrupt"),
    "handler": (1, ["ready", "handler called with arg 1", "remove_signal_handler: True",
                    "SIGINT handler restored: True", "finished normally"], 0, ""),
    "handler-thrice": (3, ["ready", "handler called with arg 1", "ready",
                           "handler called with arg 2", "ready",
                           "handler called with arg 3", "remove_signal_handler: True",
                           "SIGINT handler restored: True", "finished normally"], 0, ""),
}


@pytest.mark.parametrize("scenario", list(CTRL_C_SCENARIOS))
def test_ctrl_c_child_matches_stock(scenario: str) -> None:
    _uringloop_available()
    sigints, expected_out, expected_rc, expected_err = CTRL_C_SCENARIOS[scenario]
    stock = _run_child("ctrl_c.py", "asyncio", scenario, sigints=sigints)
    # The oracle itself behaves as described (so equality below is not vacuous).
    assert stock[0] == expected_out
    if expected_rc is not None:
        assert stock[1] == expected_rc
    else:
        assert stock[1] != 0
    assert stock[2] == expected_err
    uring = _run_child("ctrl_c.py", "uringloop", scenario, sigints=sigints)
    assert uring == stock


def test_acceptance_script_matches_stock() -> None:
    _uringloop_available()
    stock_out, stock_rc, stock_err = _run_child("acceptance.py", "asyncio")
    uring_out, uring_rc, uring_err = _run_child("acceptance.py", "uringloop")
    assert stock_rc == 0 and stock_err.endswith("_UnixSelectorEventLoop"), stock_err
    assert uring_rc == 0 and uring_err == "loop class: uringloop._loop.Loop", uring_err
    assert stock_out[-1] == "result: main done"
    assert "threadsafe calls: 100000 per thread: [12500]" in stock_out
    assert uring_out == stock_out
