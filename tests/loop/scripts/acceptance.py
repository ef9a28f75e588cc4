"""The foundation issue's acceptance script, as a child process.

    python acceptance.py {asyncio|uringloop}

Runs the same main() with ``asyncio.run(main())`` or ``uringloop.run(main())``:
timers, 8 threads making 100,000 call_soon_threadsafe calls in total, work in
the default executor and a SIGINT handler fed by a signal sent from another
thread.  stdout must be identical for both; it holds only loop-independent
facts.  The loop's class goes to stderr so the parent can check which loop ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading

import uringloop

N_THREADS = 8
TOTAL_CALLS = 100_000
GUARD = 60.0


def say(*args: object) -> None:
    print(*args, flush=True)


async def timers() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = loop.create_future()
    for name, delay in [("t30", 0.03), ("t10", 0.01), ("t0", 0.0), ("t20", 0.02)]:
        loop.call_later(delay, fired.append, name)
    cancelled = loop.call_later(0.015, fired.append, "cancelled")
    cancelled.cancel()
    loop.call_at(loop.time() + 0.04, done.set_result, None)
    loop.call_soon(fired.append, "soon")
    await done
    say("timers:", " ".join(fired))
    await asyncio.sleep(0.01)
    say("sleep(0.01) returned")


async def threadsafe_storm() -> list[str]:
    loop = asyncio.get_running_loop()
    per_thread = TOTAL_CALLS // N_THREADS
    counts = [0] * N_THREADS
    remaining = [TOTAL_CALLS]
    done = loop.create_future()

    def callback(k: int) -> None:
        counts[k] += 1
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set_result(None)

    def producer(k: int) -> None:
        for _ in range(per_thread):
            loop.call_soon_threadsafe(callback, k)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    await asyncio.wait_for(done, GUARD)
    for t in threads:
        t.join()
    return [f"threadsafe calls: {sum(counts)} per thread: {sorted(set(counts))}"]


def cpu_work(n: int) -> str:
    return hashlib.sha256(str(sum(i * i for i in range(n))).encode()).hexdigest()[:16]


async def executor_work() -> list[str]:
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(loop.run_in_executor(None, cpu_work, n)
                                     for n in (10, 1000, 100_000)))
    return ["executor: " + " ".join(results),
            "to_thread: " + await asyncio.to_thread(cpu_work, 7)]


async def sigint_handler() -> None:
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGINT, lambda tag: got.set_result(tag), "sigint-arg")
    # Sent from another thread while the loop sleeps in the kernel.
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    say("SIGINT handler got:", await asyncio.wait_for(got, GUARD))
    timer.join()
    say("removed:", loop.remove_signal_handler(signal.SIGINT),
        loop.remove_signal_handler(signal.SIGINT))


async def main() -> str:
    sys.stderr.write(f"loop class: {type(asyncio.get_running_loop()).__module__}."
                     f"{type(asyncio.get_running_loop()).__name__}\n")
    await timers()
    # Concurrently; printed afterwards in a fixed order.
    for lines in await asyncio.gather(threadsafe_storm(), executor_work()):
        for line in lines:
            say(line)
    await sigint_handler()
    return "main done"


if __name__ == "__main__":
    kind = sys.argv[1]
    result = asyncio.run(main()) if kind == "asyncio" else uringloop.run(main())
    say("result:", result)
