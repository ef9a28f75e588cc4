"""One measurement: one cell on one loop, in fresh processes.

A network measurement starts the server (pinned to the server CPU), then
the C client (pinned to the client CPU), which connects, verifies, warms up
and times; the server is killed afterwards.  A micro measurement runs
benchmarks.micro in a subprocess pinned to the server CPU.

Every failure (import error, server crash, wrong echo, timeout) becomes a
result ``{"error": "..."}``: a cell that cannot run is reported, the suite
goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from benchmarks.loops import C_REFERENCE
from benchmarks.servers import HTTP_BODY
from benchmarks.workloads import NetCell

ROOT = Path(__file__).resolve().parent.parent
# Servers and micro-benchmarks never run in asyncio debug mode (it costs a
# stack capture per callback): what is measured is the production path.
CHILD_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
SERVER_START_TIMEOUT = 20.0
VERIFY_REQUESTS = 5  # per connection, checked before any timing


@dataclasses.dataclass(frozen=True)
class Settings:
    duration: float         # timed window, seconds (0: verify only)
    warmup: float
    micro_duration: float
    micro_warmup: float
    server_cpu: int | None
    client_cpu: int | None

    @property
    def verify_only(self) -> bool:
        return self.duration <= 0


class MeasureError(Exception):
    pass


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def reason(text: str) -> str:
    """The line of a process's stderr that says why it failed.

    The last exception line of a traceback when there is one, skipping
    "Exception ignored in" reports (shutdown noise), else the last line.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found, ignoring = "", False
    for line in lines:
        if line.startswith("Exception ignored"):
            ignoring = True
        elif _EXCEPTION_LINE.match(line):
            found = found if ignoring else line
            ignoring = False
    return found or (lines[-1] if lines else "")


def _tail(f: IO[bytes]) -> str:
    f.seek(0)
    return reason(f.read().decode(errors="replace"))


def _start_server(cell: NetCell, loop: str, tools: dict[str, Path], settings: Settings,
                  stderr: IO[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    cpu = [] if settings.server_cpu is None else ["--cpu", str(settings.server_cpu)]
    if loop == C_REFERENCE:
        cmd = [str(tools["echo_server"]), "--mode", cell.mode, *cpu]
    else:
        cmd = [sys.executable, "-m", "benchmarks.servers", "--loop", loop, "--kind", cell.kind,
               *cpu]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=CHILD_ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], SERVER_START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    if not line:
        _stop(proc)
        why = _tail(stderr) or f"no port announced within {SERVER_START_TIMEOUT:.0f} s"
        raise MeasureError(f"server: {why}")
    return proc, int(json.loads(line)["port"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _run_client(cell: NetCell, port: int, server_pid: int, tools: dict[str, Path],
                settings: Settings) -> dict[str, Any]:
    cmd = [str(tools["client"]), "--port", str(port), "--mode", cell.mode,
           "--conns", str(cell.conns), "--size", str(cell.size), "--depth", str(cell.depth),
           "--verify", str(VERIFY_REQUESTS), "--warmup", str(settings.warmup),
           "--duration", str(max(settings.duration, 0)), "--server-pid", str(server_pid),
           "--body", HTTP_BODY.decode()]
    if settings.client_cpu is not None:
        cmd += ["--cpu", str(settings.client_cpu)]
    timeout = settings.warmup + max(settings.duration, 0) + 30 + cell.conns / 50
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"client: no result within {timeout:.0f} s") from None
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise MeasureError(f"client: exit {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[-300:]}") from None
    if not result.get("ok"):
        raise MeasureError(f"client: {result.get('error', 'failed')}")
    return result


def run_net(cell: NetCell, loop: str, tools: dict[str, Path],
            settings: Settings) -> dict[str, Any]:
    """Measure one network cell on one loop; never raises for a failing cell."""
    with tempfile.TemporaryFile() as stderr:
        try:
            server, port = _start_server(cell, loop, tools, settings, stderr)
            try:
                res = _run_client(cell, port, server.pid, tools, settings)
            except MeasureError as exc:
                if server.poll() is not None:  # the server died: its reason is better
                    raise MeasureError(f"server: {_tail(stderr)}") from exc
                logged = _tail(stderr)
                raise MeasureError(f"{exc}; server logged: {logged}" if logged else str(exc)) \
                    from exc
            finally:
                _stop(server)
        except MeasureError as exc:
            return {"error": str(exc)}
    if settings.verify_only:
        return {"verified": res["verified"]}
    secs, n = res["seconds"], res["requests"]
    return {
        "rps": res["rps"],
        "requests": n,
        "seconds": secs,
        "cpu_us_per_req": res["server_cpu_s"] / n * 1e6 if n and res["server_cpu_s"] >= 0
        else None,
        "server_util": res["server_cpu_s"] / secs,
        "client_util": res["client_cpu_s"] / secs,
        "other_util": res["other_cpu_s"] / secs,
        "verified": res["verified"],
    }


def run_micro(bench: str, loop: str, settings: Settings) -> dict[str, Any]:
    """Measure one loop-heart micro-benchmark on one loop, in its own process."""
    cmd = [sys.executable, "-m", "benchmarks.micro", "--loop", loop, "--bench", bench,
           "--warmup", str(settings.micro_warmup),
           "--duration", str(settings.micro_duration if not settings.verify_only else 0)]
    if settings.server_cpu is not None:
        cmd += ["--cpu", str(settings.server_cpu)]
    timeout = settings.micro_warmup + settings.micro_duration + 60
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=CHILD_ENV, check=False,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": reason(proc.stderr) or f"exit {proc.returncode}"}
    res = json.loads(lines[-1])
    if settings.verify_only:
        return {"verified": res["verified"]}
    return {
        "ops_per_s": res["ops_per_s"],
        "ops": res["ops"],
        "seconds": res["seconds"],
        "cpu_us_per_op": res["cpu_s"] / res["ops"] * 1e6,
        "cpu_util": res["cpu_s"] / res["seconds"],
        "other_util": res["other_cpu_s"] / res["seconds"],
    }
