"""gunicorn + aiohttp on uringloop: `--worker-class uringloop.worker.GunicornWebWorker`.

The real gunicorn CLI runs in a subprocess with two workers; the same checks
run with aiohttp's own `aiohttp.GunicornWebWorker` (stock asyncio, the oracle).
Handlers report their pid and loop type, so the test sees that both workers
answered, each on its own loop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from procutil import (HOST, START_GUARD, Proc, console_script, free_port, get_json,
                      listening_socket, request, require, spawn, wait_ready)

WORKERS = {"asyncio": "aiohttp.GunicornWebWorker",
           "uringloop": "uringloop.worker.GunicornWebWorker"}
EXPECTED_MODULE = {"asyncio": "asyncio.unix_events", "uringloop": "uringloop._loop"}

APP = textwrap.dedent('''
    import asyncio, hashlib, os, time
    from aiohttp import web

    def loop_info():
        loop = asyncio.get_running_loop()
        features = getattr(loop, "features", None)
        return {"module": type(loop).__module__, "name": type(loop).__qualname__,
                "pid": os.getpid(),
                "disabled": sorted(features.disabled) if features else None}

    async def info(request):
        # A blocking pause keeps this worker busy, so that concurrent
        # connections are taken by the other worker.
        time.sleep(float(request.query.get("block", "0")))
        return web.json_response(loop_info())

    async def echo(request):
        body = await request.read()
        return web.json_response({"len": len(body), "sha": hashlib.sha256(body).hexdigest(),
                                  "pid": os.getpid()})

    async def cleanup(app):
        print("CLEANUP", loop_info()["module"], os.getpid(), flush=True)

    async def factory():
        app = web.Application()
        app.router.add_get("/loop", info)
        app.router.add_post("/echo", echo)
        app.on_cleanup.append(cleanup)
        return app
''')


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    require("gunicorn")
    require("aiohttp")
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def gunicorn_args(worker: str, bind: str, *extra: str) -> list[str]:
    return [console_script("gunicorn"), "app:factory", "--worker-class", worker, "-w", "2",
            "--bind", bind, "--graceful-timeout", "10", "--log-level", "warning", *extra]


@pytest.fixture(params=list(WORKERS))
def served(request: pytest.FixtureRequest, app_dir: Path) -> Iterator[tuple[str, int, Proc]]:
    """gunicorn on a socket this test listens on, handed over as fd://N (no port race)."""
    sock = listening_socket()
    try:
        port = sock.getsockname()[1]
        args = gunicorn_args(WORKERS[request.param], f"fd://{sock.fileno()}",
                             "--env", "URINGLOOP_DISABLE=send_zc")
        with spawn(args, cwd=app_dir, pass_fds=(sock.fileno(),)) as proc:
            sock.close()
            wait_ready(proc, port)
            yield request.param, port, proc
    finally:
        sock.close()


def both_workers(port: int) -> dict[int, dict[str, Any]]:
    """Concurrent requests on new connections until two distinct workers answered."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + START_GUARD
    with ThreadPoolExecutor(4) as pool:
        while len(seen) < 2 and time.monotonic() < deadline:
            for info in pool.map(lambda _: get_json(port, "/loop?block=0.05"), range(4)):
                seen[info["pid"]] = info
    return seen


def test_two_workers_each_on_its_own_loop(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    seen = both_workers(port)
    assert len(seen) == 2, f"only {list(seen)} answered:\n{proc.output()}"
    assert proc.pid not in seen                        # workers, not the arbiter
    for info in seen.values():
        assert info["module"] == EXPECTED_MODULE[name], proc.output()
        if name == "uringloop":
            assert info["name"] == "Loop"
            # gunicorn's --env reached the loop's creation in each worker.
            assert info["disabled"] == ["send_zc"]


def test_requests_and_post_bodies(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    import hashlib
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=20)
    try:
        pids = set()
        for i in range(8):
            body = bytes(range(256)) * (i * 50 + 1)
            status, data, _ = request(port, "POST", "/echo", body=body, conn=conn)
            assert status == 200, data
            got = json.loads(data)
            assert got["len"] == len(body) and got["sha"] == hashlib.sha256(body).hexdigest()
            pids.add(got["pid"])
        assert len(pids) == 1                          # keep-alive: one connection, one worker
        status, _, _ = request(port, "GET", "/missing", conn=conn)
        assert status == 404
    finally:
        conn.close()


def test_sigterm_stops_workers_gracefully(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    pids = set(both_workers(port))
    assert proc.stop(signal.SIGTERM) == 0, proc.output()
    out = proc.output()
    cleaned = {int(line.split()[2]) for line in out.splitlines()
               if line.startswith(f"CLEANUP {EXPECTED_MODULE[name]} ")}
    assert pids <= cleaned, out
    assert "Traceback" not in out and "exited with code" not in out, out


def test_the_documented_command_line(app_dir: Path) -> None:
    """`gunicorn app:factory --worker-class uringloop.worker.GunicornWebWorker -w 2
    --bind 127.0.0.1:PORT`, retrying on another port if this one was taken first."""
    for attempt in range(5):
        port = free_port()
        with spawn(gunicorn_args(WORKERS["uringloop"], f"{HOST}:{port}"), cwd=app_dir) as proc:
            try:
                info = wait_ready(proc, port)
            except pytest.fail.Exception:
                if not proc.alive() and "in use" in proc.output():
                    continue
                raise
            assert info["module"] == "uringloop._loop"
            assert proc.stop(signal.SIGTERM) == 0, proc.output()
            return
    pytest.fail("no free port after 5 attempts")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_importing_the_module_needs_neither_gunicorn_nor_aiohttp() -> None:
    proc = _python("""
        import sys
        import uringloop.worker
        assert "gunicorn" not in sys.modules and "aiohttp" not in sys.modules, sys.modules
        print(uringloop.worker.__all__)
    """)
    assert proc.returncode == 0, proc.stderr
    proc = _python("""
        import sys
        sys.modules["gunicorn"] = None          # as if not installed
        import uringloop.worker
        try:
            uringloop.worker.GunicornWebWorker
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "needs gunicorn and aiohttp" in proc.stdout
    assert "pip install gunicorn aiohttp" in proc.stdout


def test_the_worker_class_is_aiohttps() -> None:
    require("gunicorn")
    aiohttp_worker = require("aiohttp.worker")
    import uringloop.worker
    cls = uringloop.worker.GunicornWebWorker
    assert issubclass(cls, aiohttp_worker.GunicornWebWorker)
    assert cls.__module__ == "uringloop.worker" and cls.__name__ == "GunicornWebWorker"
    assert uringloop.worker.GunicornWebWorker is cls                 # built once
    with pytest.raises(AttributeError):
        uringloop.worker.NoSuchWorker  # noqa: B018
    from gunicorn.util import load_class
    assert load_class("uringloop.worker.GunicornWebWorker") is cls
