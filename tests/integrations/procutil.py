"""Helpers of the adoption tests (tests/integrations): real servers (uvicorn, gunicorn) in subprocesses.

Every process a test starts runs in its own session and is killed -- the
whole process group, workers included -- in a ``finally``; its output goes to a
file (never a pipe that could fill up), shown when an assertion fails.
Servers bind 127.0.0.1 only.

The packages under test are in the ``test`` extra: a missing one fails the
test with the install command rather than skipping it.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HOST = "127.0.0.1"
# How long a server may take to start; a guard against a hang, not a timing test.
START_GUARD = 30.0

_counter = itertools.count()


def require(module: str) -> ModuleType:
    """Import a package of the test extra, failing (not skipping) when absent."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is required by tests/integrations and is in the test extra: "
                    f"pip install -e '.[test]' ({exc})", pytrace=False)


def console_script(name: str) -> str:
    """The console script `name` installed next to this interpreter (the real CLI)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{path} not found: pip install -e '.[test]'", pytrace=False)
    return str(path)


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` to the process (not its group) and wait for its exit code."""
        if self.alive():
            os.kill(self.popen.pid, sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pid {self.pid} did not exit within {timeout}s of signal {sig}:\n"
                        f"{self.output()}", pytrace=False)


@contextlib.contextmanager
def spawn(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
          pass_fds: tuple[int, ...] = ()) -> Iterator[Proc]:
    log = cwd / f"proc-{next(_counter)}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # Our own checkout first, so the server imports this uringloop and the app.
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(cwd), full_env.get("PYTHONPATH", "")) if p)
    with open(log, "wb") as out:
        popen = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=full_env, pass_fds=pass_fds,
                                 start_new_session=True)
    try:
        yield Proc(popen, log)
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)
        else:
            # The leader has exited; its workers may not have.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 on a port the kernel chose (no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(128)
    return sock


def free_port() -> int:
    """A port free right now; another process may take it before the server binds
    it, so callers that pass it on a command line retry (see start_with_retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None,
            conn: http.client.HTTPConnection | None = None, timeout: float = 20.0,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        data = resp.read()
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        if own:
            c.close()


def get_json(port: int, path: str, **kw: Any) -> Any:
    status, body, _ = request(port, "GET", path, **kw)
    assert status == 200, body
    return json.loads(body)


def wait_ready(proc: Proc, port: int, path: str = "/loop") -> Any:
    """Poll until the server answers `path` with 200; fail early if it died."""
    deadline = time.monotonic() + START_GUARD
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            pytest.fail(f"server exited with {proc.popen.returncode} before answering:\n"
                        f"{proc.output()}", pytrace=False)
        try:
            return get_json(port, path, timeout=5.0)
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.05)
    pytest.fail(f"server did not answer within {START_GUARD}s ({last!r}):\n{proc.output()}",
                pytrace=False)
