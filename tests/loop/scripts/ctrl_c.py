"""Child process for tests/loop/test_signals.py: Ctrl-C against a blocked loop.

    python ctrl_c.py {asyncio|uringloop} SCENARIO

Prints "ready" (flushed) each time it is about to block in the kernel; the
parent then sends SIGINT.  Everything else it prints is compared line by line
between the stock-asyncio child and the uringloop child, so print only what
does not depend on the loop implementation.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

import uringloop


def say(*args: Any) -> None:
    print(*args, flush=True)


def factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    return {"asyncio": asyncio.SelectorEventLoop, "uringloop": uringloop.new_event_loop}[kind]


async def sleep_forever() -> None:
    say("ready")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say("main cancelled")
        raise


async def await_future_forever() -> None:
    fut = asyncio.get_running_loop().create_future()
    say("ready")
    try:
        await fut
    except asyncio.CancelledError:
        say("main cancelled; future cancelled:", fut.cancelled())
        raise


async def ignore_first_cancel() -> None:
    # The first Ctrl-C cancels the main task; it carries on.  The second one
    # makes asyncio.Runner raise KeyboardInterrupt from its signal handler.
    say("ready")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say("first cancel ignored")
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
    say("ready")
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        say("cancelled again during shutdown")
        raise


async def with_handler(times: int) -> None:
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    fut = loop.create_future()

    def on_sigint(tag: str) -> None:
        calls.append(tag)
        say("handler called with", tag, len(calls))
        if len(calls) == times:
            fut.set_result(None)
        else:
            say("ready")

    loop.add_signal_handler(signal.SIGINT, on_sigint, "arg")
    loop.call_later(3600, say, "long timer fired")
    say("ready")
    await fut
    say("remove_signal_handler:", loop.remove_signal_handler(signal.SIGINT))
    say("SIGINT handler restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def run_with_runner(kind: str, main: Callable[[], Any]) -> int:
    try:
        with asyncio.Runner(loop_factory=factory(kind)) as runner:
            loop = runner.get_loop()
            runner.run(main())
    except KeyboardInterrupt:
        say("KeyboardInterrupt; loop closed:", loop.is_closed())
        return 3
    say("finished normally")
    return 0


def main() -> int:
    kind, scenario = sys.argv[1], sys.argv[2]
    if scenario == "runner-sleep":
        return run_with_runner(kind, sleep_forever)
    if scenario == "runner-future":
        return run_with_runner(kind, await_future_forever)
    if scenario == "runner-twice":
        return run_with_runner(kind, ignore_first_cancel)
    if scenario == "run-uncaught":
        # asyncio.run() / uringloop.run() with nothing catching KeyboardInterrupt:
        # the interpreter exits the way it does on an unhandled Ctrl-C.
        if kind == "asyncio":
            asyncio.run(sleep_forever())
        else:
            uringloop.run(sleep_forever())
        return 0
    if scenario == "handler":
        return run_with_runner(kind, lambda: with_handler(1))
    if scenario == "handler-thrice":
        return run_with_runner(kind, lambda: with_handler(3))
    raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    sys.exit(main())
