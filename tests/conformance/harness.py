"""Run a ``test.test_asyncio`` module on stock asyncio and on uringloop, and compare.

Stock asyncio is the oracle: every test that passes on it must pass on
uringloop, except the documented exclusions in ``exclusions.py``.

Each run is a subprocess of ``runner.py`` (one per module and loop).  A test
that hangs (``--test-timeout``) or crashes the interpreter is recorded as
``hang``/``crash`` and the module is restarted after it, so one bad test
costs one outcome, not the whole module's.

By hand, from the project root::

    python -m tests.conformance test_tasks            # both loops, compare
    python -m tests.conformance --loop uringloop test_events -v
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from .exclusions import Exclusion, exclusions_for

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(RUNNER)))

PASSING = frozenset({"pass", "xfail"})

#: The modules the conformance test runs, with the first Python that ships
#: each: the loop heart (issue 2) -- tasks, futures, synchronisation, timeouts,
#: runners, threads -- and test_events, whose loop-parametrized tests also
#: cover timers, signals, executors and the I/O built so far.
MODULES: dict[str, tuple[int, int]] = {
    "test_tasks": (3, 11),
    "test_events": (3, 11),
    "test_futures": (3, 11),
    "test_futures2": (3, 11),
    "test_locks": (3, 11),
    "test_queues": (3, 11),
    "test_timeouts": (3, 11),
    "test_taskgroups": (3, 11),
    "test_runners": (3, 11),
    "test_context": (3, 11),
    "test_waitfor": (3, 11),
    "test_threads": (3, 11),
    "test_eager_task_factory": (3, 12),
    "test_staggered": (3, 13),
    # Network, pipe and subprocess suites (issues 3 and 4).
    "test_sock_lowlevel": (3, 11),
    "test_server": (3, 11),
    "test_streams": (3, 11),
    "test_sendfile": (3, 11),
    "test_buffered_proto": (3, 11),
    "test_ssl": (3, 11),
    "test_sslproto": (3, 11),
    "test_subprocess": (3, 11),
    "test_unix_events": (3, 11),
}

#: Suites not yet enforced (none at the moment): move into MODULES when their
#: features are declared done; their exclusions go into exclusions.py.
PENDING_MODULES: tuple[str, ...] = ()

# Per single test; CPython's slowest tests here take a few seconds.
TEST_TIMEOUT = 60.0
# Per module run, restarts included.
RUN_TIMEOUT = 420.0
# More hung/crashed tests than this in one run: the run is broken, stop.
MAX_RESTARTS = 5


@dataclasses.dataclass
class Outcome:
    outcome: str
    detail: str = ""
    loops: int = 0
    time: float = 0.0


@dataclasses.dataclass
class RunResult:
    """All outcomes of one module on one loop."""

    module: str
    loop: str
    outcomes: dict[str, Outcome] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    python: str = ""
    loops_total: int = 0
    wall: float = 0.0
    output: str = ""        # the tail of what the runs printed (tests' own noise)

    def count(self, *kinds: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.outcome in kinds)

    @property
    def passed(self) -> int:
        return self.count(*PASSING)


def _tail(path: str, limit: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError:
        return ""


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    # The tests' own warnings are the suite's business, not pytest's -W error.
    env.pop("PYTHONWARNINGS", None)
    # The runner imports uringloop from this checkout even if not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH"))
                                        if p)
    return env


def run_module(module: str, loop: str, *, python: str = sys.executable,
               only: set[str] | None = None, test_timeout: float = TEST_TIMEOUT,
               run_timeout: float = RUN_TIMEOUT) -> RunResult:
    """Run ``module`` on ``loop`` in subprocesses; restart after a hung test."""
    result = RunResult(module, loop)
    t0 = time.monotonic()
    deadline = t0 + run_timeout
    with tempfile.TemporaryDirectory(prefix=f"conformance-{module}-{loop}-") as tmp:
        for attempt in range(MAX_RESTARTS + 1):
            out, err = os.path.join(tmp, f"out{attempt}"), os.path.join(tmp, f"err{attempt}")
            skip = os.path.join(tmp, f"skip{attempt}")
            with open(skip, "w") as f:
                f.write("\n".join(result.outcomes))
            cmd = [python, "-X", "faulthandler", RUNNER, module, "--loop", loop,
                   "--out", out, "--skip", skip, "--test-timeout", str(test_timeout)]
            if only is not None:
                only_file = os.path.join(tmp, "only")
                with open(only_file, "w") as f:
                    f.write("\n".join(only))
                cmd += ["--only", only_file]
            with open(err, "w") as errf:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=errf, stderr=subprocess.STDOUT,
                                        env=_subprocess_env(), cwd=tmp,
                                        start_new_session=True)
            try:
                rc = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
            finished = _parse(out, result)
            output = _tail(err)
            result.output += output
            if finished:
                break
            started = _last_unfinished(out)
            if rc is None:
                result.problems.append(
                    f"run exceeded {run_timeout:.0f}s (in test {started}); output:\n{output}")
                break
            if started is None:
                result.problems.append(
                    f"runner exited with status {rc} outside any test; output:\n{output}")
                break
            kind = "hang" if "Timeout (" in output else "crash"
            result.outcomes[started] = Outcome(kind, f"exit status {rc}\n{output}")
        else:
            result.problems.append(f"more than {MAX_RESTARTS} tests hung or crashed")
    result.wall = time.monotonic() - t0
    if not result.problems and not result.outcomes:
        result.problems.append("no tests were run")
    return result


def _records(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut short by a crash
    return records


def _parse(path: str, result: RunResult) -> bool:
    """Merge one attempt's records into result; True if the run finished."""
    finished = False
    for rec in _records(path):
        event = rec["event"]
        if event == "result":
            result.outcomes[rec["id"]] = Outcome(rec["outcome"], rec["detail"],
                                                 rec["loops"], rec["time"])
        elif event == "meta":
            result.python = rec["python"]
        elif event == "done":
            result.loops_total += rec["loops_total"]
            finished = True
        elif event == "load-error":
            result.problems.append(f"module failed to load:\n{rec['detail']}")
            finished = True
    return finished


def _last_unfinished(path: str) -> str | None:
    started = None
    for rec in _records(path):
        if rec["event"] == "start":
            started = rec["id"]
        elif rec["event"] == "result" and rec["id"] == started:
            started = None
    return started


@dataclasses.dataclass
class Comparison:
    """Stock vs uringloop for one module on one Python."""

    stock: RunResult
    uring: RunResult
    regressions: dict[str, Outcome]          # pass on stock, not on uringloop
    excluded_failing: dict[str, Exclusion]   # excluded and indeed not passing
    unexpected_passes: dict[str, Exclusion]  # excluded but passing: list is stale
    stale: dict[str, Exclusion]              # excluded but no such test here
    problems: list[str]                      # broken runs: no oracle, crash...

    @property
    def ok(self) -> bool:
        return not (self.regressions or self.unexpected_passes or self.stale
                    or self.problems)

    def report(self, verbose: bool = False) -> str:
        s, u = self.stock, self.uring
        exercised = sum(1 for o in u.outcomes.values() if o.loops)
        lines = [(f"{s.module} on Python {s.python or '?'}: stock {s.passed}/{len(s.outcomes)} "
                  f"passed ({s.wall:.1f}s), uringloop {u.passed}/{len(u.outcomes)} passed "
                  f"({u.wall:.1f}s), {len(self.excluded_failing)} excluded, "
                  f"{exercised} tests created a uringloop loop")]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        for tid, o in sorted(self.regressions.items()):
            lines.append(f"REGRESSION {tid}: {o.outcome}")
            lines.append("    " + o.detail.strip().replace("\n", "\n    "))
        for tid, e in sorted(self.unexpected_passes.items()):
            lines.append(f"UNEXPECTED PASS (remove the exclusion) {tid}: {e.reason}")
        for tid, e in sorted(self.stale.items()):
            lines.append(f"STALE EXCLUSION (no such test on this Python) {tid}")
        if verbose:
            noise = [line for line in u.output.splitlines() if "uringloop" in line]
            if noise:
                lines.append("uringloop run printed (tail):\n    " + "\n    ".join(noise[-20:]))
            for tid, e in sorted(self.excluded_failing.items()):
                lines.append(f"excluded {tid}: {u.outcomes[tid].outcome} -- {e.reason}")
        return "\n".join(lines)


def compare(stock: RunResult, uring: RunResult,
            excluded: dict[str, Exclusion]) -> Comparison:
    problems = [f"stock run: {p}" for p in stock.problems]
    problems += [f"uringloop run: {p}" for p in uring.problems]
    broken = {tid: o.outcome for tid, o in stock.outcomes.items()
              if o.outcome in ("hang", "crash")}
    if broken:
        problems.append(f"the oracle itself hung or crashed: {broken}")
    if not stock.passed:
        problems.append("no test passed on stock asyncio: the oracle ran nothing")
    regressions: dict[str, Outcome] = {}
    excluded_failing: dict[str, Exclusion] = {}
    unexpected: dict[str, Exclusion] = {}
    for tid, o in stock.outcomes.items():
        if o.outcome not in PASSING:
            continue
        got = uring.outcomes.get(tid, Outcome("missing", "not run on uringloop"))
        if tid in excluded:
            if got.outcome in PASSING:
                unexpected[tid] = excluded[tid]
            else:
                excluded_failing[tid] = excluded[tid]
        elif got.outcome not in PASSING:
            regressions[tid] = got
    for tid, o in uring.outcomes.items():
        if tid in stock.outcomes:
            continue
        if tid in excluded:
            if o.outcome in PASSING:
                unexpected[tid] = excluded[tid]
        elif o.outcome not in PASSING | {"skip"}:
            # Only in the uringloop run: a setUpClass/tearDownModule error or a
            # test that hung and was not rerun by the oracle.
            regressions[tid] = o
    stale = {tid: e for tid, e in excluded.items()
             if tid not in stock.outcomes and tid not in uring.outcomes}
    return Comparison(stock, uring, regressions, excluded_failing, unexpected, stale,
                      problems)


def run_and_compare(module: str, *, python: str = sys.executable,
                    version: str | None = None) -> Comparison:
    """Both runs of module, in parallel, compared under its exclusions."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stock_f = pool.submit(run_module, module, "asyncio", python=python)
        uring_f = pool.submit(run_module, module, "uringloop", python=python)
        stock, uring = stock_f.result(), uring_f.result()
    version = version or ".".join(stock.python.split(".")[:2]) or \
        f"{sys.version_info[0]}.{sys.version_info[1]}"
    return compare(stock, uring, exclusions_for(module, version))


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(
        description="Run test.test_asyncio modules on stock asyncio and uringloop.")
    parser.add_argument("modules", nargs="+")
    parser.add_argument("--loop", choices=("asyncio", "uringloop"),
                        help="run on this loop only and list the outcomes")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--markdown", action="store_true",
                        help="print one table row of pass counts per module")
    args = parser.parse_args(argv)
    status = 0
    if args.markdown:
        print("| module | Python | stock passed / run | uringloop passed / run "
              "| excluded | tests on a uringloop loop | verdict |")
        print("|---|---|---|---|---|---|---|")
    for module in args.modules:
        if args.loop:
            res = run_module(module, args.loop, python=args.python)
            for tid, o in sorted(res.outcomes.items()):
                if args.verbose or o.outcome not in PASSING | {"skip"}:
                    print(f"{o.outcome:6} {tid}")
                    if args.verbose and o.detail and o.outcome not in PASSING:
                        print("    " + o.detail.strip().replace("\n", "\n    "))
            print(f"{module} on {args.loop}, Python {res.python}: {res.passed}/"
                  f"{len(res.outcomes)} passed in {res.wall:.1f}s")
            for p in res.problems:
                print(f"PROBLEM: {p}")
            status |= bool(res.problems)
        else:
            cmp = run_and_compare(module, python=args.python)
            if args.markdown:
                s, u = cmp.stock, cmp.uring
                exercised = sum(1 for o in u.outcomes.values() if o.loops)
                print(f"| {module} | {s.python} | {s.passed} / {len(s.outcomes)} "
                      f"| {u.passed} / {len(u.outcomes)} | {len(cmp.excluded_failing)} "
                      f"| {exercised} | {'ok' if cmp.ok else 'FAIL'} |", flush=True)
            else:
                print(cmp.report(args.verbose), flush=True)
            status |= not cmp.ok
    return status
