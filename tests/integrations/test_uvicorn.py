"""uvicorn serving an ASGI app on uringloop: `uvicorn app:app --loop uringloop:new_event_loop`.

The real uvicorn CLI runs in a subprocess; requests come from http.client in
this process.  The same checks run with `--loop asyncio` (the oracle), and the
app reports, from inside the serving process, the type of its running loop.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from procutil import (HOST, START_GUARD, Proc, console_script, free_port, get_json, listening_socket,
                       request, require, spawn, wait_ready)

URINGLOOP = "uringloop:new_event_loop"
LOOPS = {"asyncio": "asyncio", "uringloop": URINGLOOP}
EXPECTED_MODULE = {"asyncio": "asyncio.unix_events", "uringloop": "uringloop._loop"}
CONCURRENT = 8

APP = textwrap.dedent('''
    import asyncio, json, os

    state = {"in_flight": 0, "all_in": None, "lifespan_loop": None}

    def loop_info():
        loop = asyncio.get_running_loop()
        return {"module": type(loop).__module__, "name": type(loop).__qualname__,
                "pid": os.getpid()}

    async def read_body(receive):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return body

    async def send_json(send, payload, status=200):
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["lifespan_loop"] = loop_info()["module"]
                    await send({"type": "lifespan.startup.complete"})
                else:
                    print("SHUTDOWN on", loop_info()["module"], flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        body = await read_body(receive)
        if path == "/loop":
            await send_json(send, {**loop_info(), "lifespan_loop": state["lifespan_loop"]})
        elif path == "/echo":
            await send_json(send, {"method": scope["method"], "len": len(body),
                                   "sha": __import__("hashlib").sha256(body).hexdigest(),
                                   "client_port": scope["client"][1]})
        elif path == "/together":
            # Answers only once N requests are in flight at the same time.
            n = int(scope["query_string"].decode().split("=")[1])
            if state["all_in"] is None:
                state["all_in"] = asyncio.Event()
            state["in_flight"] += 1
            if state["in_flight"] >= n:
                state["all_in"].set()
            await asyncio.wait_for(state["all_in"].wait(), 20)
            await send_json(send, {"ok": True, "client_port": scope["client"][1]})
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            for i in range(5):
                await send({"type": "http.response.body", "body": b"chunk%d;" % i,
                            "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b""})
        else:
            await send_json(send, {"error": "not found"}, status=404)
''')


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    require("uvicorn")
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def uvicorn_args(loop: str, *extra: str) -> list[str]:
    return [console_script("uvicorn"), "app:app", "--loop", loop, "--log-level", "warning",
            "--no-access-log", *extra]


@pytest.fixture(params=list(LOOPS))
def served(request: pytest.FixtureRequest, app_dir: Path) -> Iterator[tuple[str, int, Proc]]:
    """uvicorn on a socket this test listens on and hands over with --fd (no port race)."""
    sock = listening_socket()
    try:
        port = sock.getsockname()[1]
        with spawn(uvicorn_args(LOOPS[request.param], "--fd", str(sock.fileno())),
                   cwd=app_dir, pass_fds=(sock.fileno(),)) as proc:
            sock.close()        # the server holds its own copy
            wait_ready(proc, port)
            yield request.param, port, proc
    finally:
        sock.close()


def test_the_served_loop_is_the_one_asked_for(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    info = get_json(port, "/loop")
    assert info["module"] == EXPECTED_MODULE[name], proc.output()
    assert info["lifespan_loop"] == EXPECTED_MODULE[name]
    assert info["pid"] == proc.pid
    if name == "uringloop":
        assert info["name"] == "Loop"


def test_requests_keepalive_post_and_streaming(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    conn = http.client.HTTPConnection(HOST, port, timeout=20)
    try:
        ports = set()
        for i in range(10):
            body = bytes(range(256)) * (i * 40 + 1)           # up to ~92 KiB
            status, data, headers = request(port, "POST", "/echo", body=body, conn=conn)
            assert status == 200, data
            assert headers["content-type"] == "application/json"
            got = json.loads(data)
            assert got["method"] == "POST" and got["len"] == len(body)
            assert got["sha"] == __import__("hashlib").sha256(body).hexdigest()
            ports.add(got["client_port"])
        # Keep-alive: all ten requests came over one connection.
        assert ports == {conn.sock.getsockname()[1]}
        status, data, _ = request(port, "GET", "/echo", conn=conn)
        assert status == 200 and json.loads(data)["len"] == 0
        status, data, headers = request(port, "GET", "/stream", conn=conn)
        assert status == 200 and data == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
        assert headers.get("transfer-encoding") == "chunked"
        status, data, _ = request(port, "GET", "/nope", conn=conn)
        assert status == 404 and json.loads(data) == {"error": "not found"}
    finally:
        conn.close()
    assert proc.alive(), proc.output()


def test_concurrent_clients(served: tuple[str, int, Proc]) -> None:
    """CONCURRENT clients whose requests are all in flight at once, then more each."""
    name, port, proc = served

    def client(i: int) -> list[Any]:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            out = [json.loads(request(port, "GET", f"/together?n={CONCURRENT}", conn=conn)[1])]
            for j in range(5):
                body = f"client {i} request {j}".encode()
                status, data, _ = request(port, "POST", "/echo", body=body, conn=conn)
                assert status == 200
                out.append(json.loads(data)["len"] == len(body))
            return out
        finally:
            conn.close()

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(client, range(CONCURRENT)))
    assert all(r[0]["ok"] and all(r[1:]) for r in results)
    assert len({r[0]["client_port"] for r in results}) == CONCURRENT


def stop_gracefully(proc: Proc, loop_module: str) -> None:
    """SIGTERM: uvicorn shuts down (lifespan shutdown on the same loop), then
    re-raises the signal it caught, so the exit status is -SIGTERM on every loop."""
    assert proc.stop(signal.SIGTERM) == -signal.SIGTERM, proc.output()
    assert f"SHUTDOWN on {loop_module}" in proc.output()


def test_sigterm_runs_lifespan_shutdown(served: tuple[str, int, Proc]) -> None:
    name, port, proc = served
    assert get_json(port, "/loop")["module"] == EXPECTED_MODULE[name]
    stop_gracefully(proc, EXPECTED_MODULE[name])


def test_the_documented_command_line_with_host_and_port(app_dir: Path) -> None:
    """`uvicorn app:app --loop uringloop:new_event_loop --host 127.0.0.1 --port N`.

    The port is free when chosen but may be taken before uvicorn binds it; then
    uvicorn exits at once ("address already in use") and we try another port.
    """
    for attempt in range(5):
        port = free_port()
        with spawn(uvicorn_args(URINGLOOP, "--host", HOST, "--port", str(port)),
                   cwd=app_dir) as proc:
            try:
                info = wait_ready(proc, port)
            except pytest.fail.Exception:
                if not proc.alive() and "already in use" in proc.output():
                    continue
                raise
            assert info["module"] == "uringloop._loop" and info["pid"] == proc.pid
            status, data, _ = request(port, "POST", "/echo", body=b"x" * 1000)
            assert status == 200 and json.loads(data)["len"] == 1000
            stop_gracefully(proc, "uringloop._loop")
            return
    pytest.fail("no free port after 5 attempts")


def test_a_bad_loop_factory_fails_clearly(app_dir: Path) -> None:
    with spawn(uvicorn_args("uringloop:no_such_factory", "--port", str(free_port()),
                            "--host", HOST), cwd=app_dir) as proc:
        code = proc.popen.wait(START_GUARD)
        assert code != 0
        assert "no_such_factory" in proc.output()


def test_uds(app_dir: Path) -> None:
    """--uds: the Unix-socket listener a reverse proxy would talk to."""
    path = app_dir / "uvicorn.sock"
    with spawn(uvicorn_args(URINGLOOP, "--uds", str(path)), cwd=app_dir) as proc:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert proc.alive(), proc.output()
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
        for _ in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(20)
                try:
                    s.connect(str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    time.sleep(0.05)
                    continue
                s.sendall(b"GET /loop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                break
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), data
        assert json.loads(body)["module"] == "uringloop._loop"
        stop_gracefully(proc, "uringloop._loop")


def test_workers_share_the_port(app_dir: Path) -> None:
    """`uvicorn --workers 2 --loop uringloop:new_event_loop`: both workers serve,
    each on its own uringloop, and the connections are spread (uvicorn passes the
    shared socket with sock=: single-shot accepts, see test_shared_listener.py)."""
    from concurrent.futures import ThreadPoolExecutor
    for attempt in range(5):
        port = free_port()
        with spawn(uvicorn_args(URINGLOOP, "--host", HOST, "--port", str(port), "--workers", "2"),
                   cwd=app_dir) as proc:
            try:
                wait_ready(proc, port)
            except pytest.fail.Exception:
                if not proc.alive() and "already in use" in proc.output():
                    continue
                raise
            seen: dict[int, str] = {}
            deadline = time.monotonic() + START_GUARD
            with ThreadPoolExecutor(4) as pool:
                while len(seen) < 2 and time.monotonic() < deadline:
                    for info in pool.map(lambda _: get_json(port, "/loop"), range(8)):
                        seen[info["pid"]] = info["module"]
            assert len(seen) == 2 and proc.pid not in seen, (seen, proc.output())
            assert set(seen.values()) == {"uringloop._loop"}
            # Both armed now: connections are spread (with multishot accepts,
            # one worker took all 200 of 200 in the run that found the bug).
            with ThreadPoolExecutor(4) as pool:
                pids = list(pool.map(lambda _: get_json(port, "/loop")["pid"], range(100)))
            assert min(pids.count(pid) for pid in seen) >= 10, pids
            proc.stop(signal.SIGTERM)
            return
    pytest.fail("no free port after 5 attempts")
