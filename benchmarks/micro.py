"""Loop-heart micro-benchmarks, run in-process on one loop.

    python -m benchmarks.micro --loop uringloop --bench call_soon --duration 1 --cpu 0

Each benchmark runs batches of a fixed number of operations, checking every
batch's result, on the loop named by --loop (``asyncio.Runner(loop_factory=...)``).
Batches run for --warmup seconds untimed, then for at least --duration
seconds timed.  Prints one JSON object: operations, seconds, ops/s, the
process's CPU time (all threads) over the timed batches, and the CPU time
the rest of the machine used meanwhile (how noisy the window was).  With --duration 0
one batch runs and only its check counts (``{"ok": true, "verified": ops}``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import queue
import resource
import threading
import time
from typing import Any

from benchmarks.loops import PYTHON_LOOPS, loop_factory

CHAINS = 10


class Bench:
    """One kind of operation; batch() runs a fixed number and returns it."""

    description = ""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def batch(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CallSoon(Bench):
    description = "callbacks run via call_soon (10 self-rescheduling chains)"
    steps = 2000

    async def batch(self) -> int:
        loop, done = self.loop, self.loop.create_future()
        left = [CHAINS]

        def step(n: int) -> None:
            if n:
                loop.call_soon(step, n - 1)
            else:
                left[0] -= 1
                if not left[0]:
                    done.set_result(None)

        for _ in range(CHAINS):
            loop.call_soon(step, self.steps - 1)
        await done
        return CHAINS * self.steps


class CallLater(Bench):
    description = "timers scheduled with call_later (due within 1 ms) and fired"
    timers = 5000

    async def batch(self) -> int:
        loop, done = self.loop, self.loop.create_future()
        fired = [0]

        def fire(i: int) -> None:
            fired[0] += 1
            if fired[0] == self.timers:
                done.set_result(None)

        for i in range(self.timers):
            loop.call_later((i % 100) * 1e-5, fire, i)
        await done
        return self.timers


class ThreadsafePingPong(Bench):
    description = "round trips: loop -> thread (queue) -> loop (call_soon_threadsafe)"
    trips = 1000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.to_thread: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._bounce, daemon=True)
        self.thread.start()

    def _bounce(self) -> None:
        while (item := self.to_thread.get()) is not None:
            callback, n = item
            self.loop.call_soon_threadsafe(callback, n)

    async def batch(self) -> int:
        done = self.loop.create_future()

        def pong(n: int) -> None:
            if n == self.trips:
                done.set_result(n)
            else:
                self.to_thread.put((pong, n + 1))

        self.to_thread.put((pong, 1))
        await done
        return self.trips

    def close(self) -> None:
        self.to_thread.put(None)
        self.thread.join()


class ExecutorPingPong(Bench):
    description = "futures resolved by another thread (await run_in_executor)"
    calls = 500

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def batch(self) -> int:
        for i in range(self.calls):
            if await self.loop.run_in_executor(self.pool, abs, -i) != i:
                raise AssertionError("run_in_executor returned a wrong result")
        return self.calls

    def close(self) -> None:
        self.pool.shutdown()


class FutureChurn(Bench):
    description = "create a future, resolve it via call_soon, await it"
    futures = 5000

    async def batch(self) -> int:
        loop = self.loop
        for i in range(self.futures):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            if await fut != i:
                raise AssertionError("future resolved with a wrong value")
        return self.futures


class TaskChurn(Bench):
    description = "create 100 tasks that yield once, gather them"
    tasks = 100
    rounds = 20

    async def batch(self) -> int:
        async def child(i: int) -> int:
            await asyncio.sleep(0)
            return i

        for _ in range(self.rounds):
            results = await asyncio.gather(*[self.loop.create_task(child(i))
                                             for i in range(self.tasks)])
            if results != list(range(self.tasks)):
                raise AssertionError("gather returned wrong results")
        return self.tasks * self.rounds


BENCHES: dict[str, type[Bench]] = {
    "call_soon": CallSoon,
    "call_later": CallLater,
    "threadsafe_pingpong": ThreadsafePingPong,
    "executor_pingpong": ExecutorPingPong,
    "future_churn": FutureChurn,
    "task_churn": TaskChurn,
}


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (to show what else ran)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def measure(name: str, warmup: float, duration: float) -> dict[str, Any]:
    bench = BENCHES[name](asyncio.get_running_loop())
    try:
        if duration <= 0:
            return {"ok": True, "verified": await bench.batch()}
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            await bench.batch()
        ops, busy0, cpu0, t0 = 0, _machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
        while (t1 := time.perf_counter()) - t0 < duration:
            ops += await bench.batch()
        cpu = _cpu_seconds() - cpu0
        others = _machine_busy_seconds() - busy0 - cpu
    finally:
        bench.close()
    return {"ok": True, "ops": ops, "seconds": t1 - t0, "ops_per_s": ops / (t1 - t0),
            "cpu_s": cpu, "other_cpu_s": others}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=PYTHON_LOOPS, required=True)
    parser.add_argument("--bench", choices=sorted(BENCHES), required=True)
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        result = runner.run(measure(args.bench, args.warmup, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
