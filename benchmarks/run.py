"""Run the side-by-side benchmark suite: uringloop vs asyncio vs uvloop (vs a C limit).

    python -m benchmarks              # full run, 7-9 minutes on 2 cores
    python -m benchmarks --nice -10   # ahead of other work on a shared machine (root)
    python -m benchmarks --quick      # about a minute
    python -m benchmarks --verify-only --loops asyncio,c   # correctness only, no timing

Method (docs/benchmarks.md): each server runs in its own process pinned to one
CPU, the C load generator is pinned to the other; in every round each cell is
measured on every loop back to back, in an order that rotates from round to
round and from cell to cell; the ratio to stock asyncio is taken per round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.build import BuildError, build_tools
from benchmarks.loops import ALL_LOOPS, C_REFERENCE, PYTHON_LOOPS, not_installed, unavailable
from benchmarks.measure import ROOT, Settings, run_micro, run_net
from benchmarks.micro import BENCHES
from benchmarks.servers import REQUIRES
from benchmarks.workloads import MICRO_BENCHES, NET_CELLS, QUICK_NET_CELLS, NetCell

RESULTS_DIR = ROOT / "benchmarks" / "results"
# (rounds, duration, warmup, micro duration, micro warmup)
PROFILES = {"full": (3, 1.2, 0.3, 0.5, 0.15), "quick": (2, 0.4, 0.1, 0.2, 0.05)}
VERIFY_PARALLEL = 6  # checks in flight at once in a verify-only run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer cells, shorter windows (~1 min)")
    p.add_argument("--verify-only", action="store_true",
                   help="check every server's answers, time nothing")
    p.add_argument("--loops", default=",".join(ALL_LOOPS),
                   help=f"comma-separated, from {','.join(ALL_LOOPS)} (default: all)")
    p.add_argument("--only", choices=("net", "micro"), help="run one section only")
    p.add_argument("--cells", default="",
                   help="comma-separated substrings: keep the cells whose name has one")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="timed window of a network cell, seconds")
    p.add_argument("--warmup", type=float, help="warm-up before a network window, seconds")
    p.add_argument("--micro-duration", type=float)
    p.add_argument("--server-cpu", type=int, help="CPU for servers and micro-benchmarks")
    p.add_argument("--client-cpu", type=int, help="CPU for the load generator")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness for the run, e.g. -10 (needs root): the measured processes "
                        "then take precedence over other work on a shared machine")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where JSON and PNG go")
    p.add_argument("--json", type=Path, help="write the JSON here instead")
    args = p.parse_args(argv)
    args.loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = set(args.loops) - set(ALL_LOOPS)
    if unknown:
        p.error(f"unknown loops: {', '.join(sorted(unknown))}")
    return args


def choose_cpus(args: argparse.Namespace) -> tuple[int | None, int | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if args.server_cpu is not None or args.client_cpu is not None:
        return args.server_cpu, args.client_cpu, "as asked"
    if len(cpus) < 2:
        return None, None, f"not pinned: only CPU {cpus} available (numbers will be worse)"
    return cpus[0], cpus[1], f"server CPU {cpus[0]}, client CPU {cpus[1]}"


def make_settings(args: argparse.Namespace, server_cpu: int | None,
                  client_cpu: int | None) -> tuple[Settings, int]:
    rounds, duration, warmup, micro_duration, micro_warmup = PROFILES[
        "quick" if args.quick else "full"]
    if args.verify_only:  # checks overlap (see run_section): no pinning
        return Settings(0, 0, 0, 0, None, None), 1
    return Settings(duration=args.duration or duration, warmup=args.warmup or warmup,
                    micro_duration=args.micro_duration or micro_duration,
                    micro_warmup=micro_warmup, server_cpu=server_cpu,
                    client_cpu=client_cpu), args.rounds or rounds


def select_cells(args: argparse.Namespace) -> tuple[list[NetCell], list[str]]:
    net = list(QUICK_NET_CELLS if args.quick else NET_CELLS)
    micro = list(MICRO_BENCHES)
    if args.cells:
        wanted = [w.strip() for w in args.cells.split(",") if w.strip()]
        net = [c for c in net if any(w in c.name for w in wanted)]
        micro = [b for b in micro if any(w in b for w in wanted)]
    return (net if args.only != "micro" else []), (micro if args.only != "net" else [])


def rotated(loops: list[str], shift: int) -> list[str]:
    k = shift % len(loops)
    return loops[k:] + loops[:k]


def skip_reason(loop: str, cell: NetCell | None, tools_error: str | None) -> str | None:
    """Why loop cannot run this cell at all, known without trying (or None)."""
    if cell is not None and tools_error:
        return tools_error
    if loop == C_REFERENCE:
        return None
    module = REQUIRES.get(cell.kind) if cell is not None else None
    return (module and not_installed(module)) or unavailable(loop)


def run_section(names: list[str], loops: list[str], rounds: int,
                measure: Callable[[int, str], dict[str, Any]],
                skip: Callable[[int, str], str | None], fmt: Callable[[dict[str, Any]], str],
                title: str, parallel: int = 1) -> list[dict[str, Any]]:
    """For every round and cell, measure every loop in a rotating order.

    Timed runs go one at a time (parallel=1); a verify-only run may overlap
    its checks, since nothing is timed.
    """
    jobs = [(r, i, pos, loop) for r in range(rounds) for i in range(len(names))
            for pos, loop in enumerate(rotated(loops, r + i))]

    def run_job(job: tuple[int, int, int, str]) -> dict[str, Any]:
        r, i, pos, loop = job
        why = skip(i, loop)
        res: dict[str, Any] = {"error": why} if why else measure(i, loop)
        res.update(round=r, position=pos)
        return res

    per_cell: list[dict[str, list[dict[str, Any]]]] = [{lp: [] for lp in loops} for _ in names]
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        for (r, i, _, loop), res in zip(jobs, pool.map(run_job, jobs)):
            per_cell[i][loop].append(res)
            print(f"[{title} {r + 1}/{rounds}] {names[i]:<34} {loop:<10} {fmt(res)}",
                  flush=True)
    return [{"rounds": rounds_of_cell} for rounds_of_cell in per_cell]


def _fmt_net(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"n/a (error: {res['error']})"
    if "rps" not in res:
        return f"verified {res['verified']} requests"
    return (f"{res['rps']:>10,.0f} req/s  {res['cpu_us_per_req']:7.2f} us/req  "
            f"server {res['server_util']:.0%} client {res['client_util']:.0%} "
            f"others {res['other_util']:.0%}")


def _fmt_micro(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"n/a (error: {res['error']})"
    if "ops_per_s" not in res:
        return f"verified {res['verified']} ops"
    return (f"{res['ops_per_s']:>10,.0f} ops/s  {res['cpu_us_per_op']:7.3f} us/op  "
            f"proc {res['cpu_util']:.0%} others {res['other_util']:.0%}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for dist in ("uringloop", "uvloop", "aiohttp", "httptools"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, check=False,
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return rev or "unknown"


@contextlib.contextmanager
def priority(nice: int) -> Iterator[None]:
    """Run the block, and every process it starts, at niceness `nice`.

    Where the kernel shares CPU time between sessions first (autogroup, the
    default on most distributions), a process's niceness only counts within
    its session, so the session's autogroup niceness is set too, and restored
    afterwards.
    """
    if not nice:
        yield
        return
    autogroup = Path("/proc/self/autogroup")
    saved = None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # inherited by every child
        if autogroup.exists():
            saved = autogroup.read_text().split()[-1]
            autogroup.write_text(str(nice))
    except OSError as exc:
        print(f"--nice {nice}: {exc.strerror}; the run goes on at the priority it has",
              file=sys.stderr)
    try:
        yield
    finally:
        if saved is not None:
            autogroup.write_text(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with priority(args.nice):
        return run(args)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    server_cpu, client_cpu, pinning = choose_cpus(args)
    settings, rounds = make_settings(args, server_cpu, client_cpu)
    net_cells, micro_benches = select_cells(args)
    if client_cpu is not None:  # keep the runner itself off the server's CPU
        os.sched_setaffinity(0, {client_cpu})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tools: dict[str, Path] = {}
    tools_error = None
    if net_cells:
        try:
            tools = build_tools()
        except BuildError as exc:
            tools_error = f"C tools not built: {exc}"
            print(tools_error, file=sys.stderr)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    timing = "verify only" if settings.verify_only else f"{settings.duration} s windows"
    print(f"uringloop benchmarks {stamp}: {len(net_cells)} network cells, "
          f"{len(micro_benches)} micro-benchmarks, loops {','.join(args.loops)}, "
          f"{rounds} round(s), {timing}; {pinning}", flush=True)

    net_loops = args.loops
    micro_loops = [lp for lp in args.loops if lp in PYTHON_LOOPS]
    parallel = VERIFY_PARALLEL if settings.verify_only else 1
    net = run_section([c.name for c in net_cells], net_loops, rounds,
                      lambda i, lp: run_net(net_cells[i], lp, tools, settings),
                      lambda i, lp: skip_reason(lp, net_cells[i], tools_error),
                      _fmt_net, "net", parallel) if net_cells else []
    micro = run_section(micro_benches, micro_loops, rounds,
                        lambda i, lp: run_micro(micro_benches[i], lp, settings),
                        lambda i, lp: skip_reason(lp, None, None),
                        _fmt_micro, "micro", parallel) if micro_benches and micro_loops else []

    for entry, cell in zip(net, net_cells):
        entry.update(name=cell.name, group=cell.group, kind=cell.kind, mode=cell.mode,
                     size=cell.size, conns=cell.conns, depth=cell.depth,
                     summary=report.summarize(entry["rounds"], report.NET_KEYS))
    for entry, bench in zip(micro, micro_benches):
        entry.update(name=bench, description=BENCHES[bench].description,
                     summary=report.summarize(entry["rounds"], report.MICRO_KEYS))

    results = {
        "meta": {"timestamp": stamp, "rounds": rounds, "verify_only": settings.verify_only,
                 "quick": args.quick, "duration_s": settings.duration,
                 "warmup_s": settings.warmup, "micro_duration_s": settings.micro_duration,
                 "server_cpu": server_cpu, "client_cpu": client_cpu, "pinning": pinning,
                 "nice": os.getpriority(os.PRIO_PROCESS, 0),
                 "loops": args.loops, "kernel": platform.release(),
                 "machine": platform.machine(), "cpus": os.cpu_count(),
                 "git": _git_revision(), "versions": _versions()},
        "net": net,
        "micro": micro,
    }
    print()
    if net:
        print(report.table("network", net, net=True))
        print()
    if micro:
        print(report.table("loop heart", micro, net=False))
        print()
    if args.json or not settings.verify_only:
        json_path = args.json or args.out / f"{stamp}.json"
        report.write_json(json_path, results)
        print(f"JSON: {json_path}")
    if not settings.verify_only:
        png = args.out / f"{stamp}.png"
        why_not = report.write_chart(png, results)
        print(f"chart: {png}" if why_not is None else f"chart: none ({why_not})")
    print(f"finished in {time.monotonic() - started:.0f} s")
    return 1 if settings.verify_only and failures(results) else 0


def failures(results: dict[str, Any]) -> list[str]:
    """Cells that failed for a reason other than a missing optional package."""
    return [f"{entry['name']} on {loop}: {err}"
            for entry in results["net"] + results["micro"]
            for loop, s in entry["summary"].items() for err in s["errors"]
            if not err.endswith("not installed")]


if __name__ == "__main__":
    sys.exit(main())
