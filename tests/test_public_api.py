"""The public API: every documented way of adopting uringloop, and the CLI.

    uringloop.run(main())
    asyncio.Runner(loop_factory=uringloop.new_event_loop)
    asyncio.run(main(), loop_factory=uringloop.new_event_loop)      # 3.12+
    asyncio.set_event_loop_policy(uringloop.EventLoopPolicy())
    uringloop.install()
    python -m uringloop run script.py

Where asyncio has an answer (asyncio.run's errors, its debug default), the
test asks asyncio and requires the same answer from uringloop.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import uringloop

# A guard against a lost wakeup, not a timing assertion.
GUARD = 30.0


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def loop_debug() -> bool:
    return asyncio.get_running_loop().get_debug()


# ---------------------------------------------------------------------------
# uringloop.run


def test_run_returns_the_result_on_a_uringloop_loop() -> None:
    async def main() -> tuple[str, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0)
        return "result", asyncio.get_running_loop()

    result, loop = uringloop.run(main())
    assert result == "result"
    assert isinstance(loop, uringloop.Loop)
    assert loop.is_closed()                      # run() closes its loop


def test_run_propagates_exceptions_and_closes_the_loop() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    class Boom(Exception):
        pass

    async def main() -> None:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        raise Boom("from main")

    with pytest.raises(Boom, match="from main"):
        uringloop.run(main())
    assert seen and seen[0].is_closed()


def test_run_cancels_leftover_tasks_like_asyncio_run() -> None:
    cancelled: list[bool] = []

    async def straggler() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        asyncio.get_running_loop().create_task(straggler())
        await asyncio.sleep(0)

    uringloop.run(main())
    assert cancelled == [True]


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug(debug: bool) -> None:
    assert uringloop.run(loop_debug(), debug=debug) is debug


def test_run_debug_default_matches_asyncio() -> None:
    # None leaves it to the environment (PYTHONASYNCIODEBUG, -X dev), as asyncio.run.
    assert uringloop.run(loop_debug()) is asyncio.run(loop_debug())


class _Awaitable:
    def __await__(self) -> Any:
        return (yield from asyncio.sleep(0).__await__())


NOT_COROUTINES: dict[str, Callable[[], Any]] = {
    "coroutine function, not called": lambda: running_loop,
    "None": lambda: None,
    "int": lambda: 42,
    "awaitable object": _Awaitable,
}


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "returned", fn()
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        return "raised", type(exc)


@pytest.mark.parametrize("what", sorted(NOT_COROUTINES))
def test_run_non_coroutine_same_error_as_asyncio(what: str) -> None:
    make = NOT_COROUTINES[what]
    expected = _outcome(lambda: asyncio.run(make()))
    assert expected[0] == "raised"             # asyncio refuses these ...
    assert _outcome(lambda: uringloop.run(make())) == expected   # ... and so do we


def test_run_inside_a_running_loop_same_error_as_asyncio() -> None:
    async def main() -> tuple[tuple[str, Any], tuple[str, Any]]:
        results = []
        for runner in (asyncio.run, uringloop.run):
            coro = asyncio.sleep(0)
            # A coroutine, and a non-coroutine: the running loop is named first.
            results.append((_outcome(lambda r=runner, c=coro: r(c)),
                            _outcome(lambda r=runner: r(None))))
            coro.close()
        return results[0], results[1]

    stock, ours = uringloop.run(main())
    assert stock == (("raised", RuntimeError), ("raised", RuntimeError))
    assert ours == stock     # and no loop was made (its close would warn: an error here)


def test_run_with_a_loop_factory() -> None:
    def factory() -> asyncio.AbstractEventLoop:
        return uringloop.Loop(disable={"send_zc"})

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uringloop.Loop)
        return loop.features.send_zc

    assert uringloop.run(main(), loop_factory=factory) is False


# ---------------------------------------------------------------------------
# asyncio's own entry points with uringloop.new_event_loop


def test_asyncio_runner_with_loop_factory() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def set_var() -> None:
        var.set("set")

    async def get_var() -> str:
        return var.get()

    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, uringloop.Loop)
        assert runner.run(running_loop()) is loop
        runner.run(set_var())
        assert runner.run(get_var()) == "set"   # one context across run() calls
    assert loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is new in Python 3.12")
def test_asyncio_run_with_loop_factory() -> None:
    loop = asyncio.run(running_loop(), loop_factory=uringloop.new_event_loop)  # type: ignore[call-arg]
    assert isinstance(loop, uringloop.Loop)
    assert loop.is_closed()


# ---------------------------------------------------------------------------
# the policy, and install()


@pytest.fixture
def restore_policy() -> Iterator[None]:
    """Put the process's event loop policy back, whatever the test installed."""
    saved = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)
        assert asyncio.get_event_loop_policy() is saved


def test_event_loop_policy(restore_policy: None) -> None:
    policy = uringloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    asyncio.set_event_loop_policy(policy)
    loop = asyncio.get_event_loop_policy().new_event_loop()
    try:
        assert isinstance(loop, uringloop.Loop)
    finally:
        loop.close()
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uringloop.Loop)
    finally:
        loop.close()
    # An unmodified asyncio.run() now runs on uringloop.
    ran_on = asyncio.run(running_loop())
    assert isinstance(ran_on, uringloop.Loop) and ran_on.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="install() is deprecated from Python 3.12 on, as uvloop.install()")
def test_install_is_deprecated_from_312(restore_policy: None) -> None:
    with pytest.deprecated_call(match=r"uringloop\.run\(\)") as record:
        uringloop.install()
    assert record[0].filename == __file__          # attributed to the caller
    assert isinstance(asyncio.get_event_loop_policy(), uringloop.EventLoopPolicy)
    assert isinstance(asyncio.run(running_loop()), uringloop.Loop)


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="install() only stays quiet before Python 3.12")
def test_install_is_quiet_on_311(restore_policy: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uringloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), uringloop.EventLoopPolicy)
    assert isinstance(asyncio.run(running_loop()), uringloop.Loop)


# ---------------------------------------------------------------------------
# the Loop object


def test_loop_is_an_asyncio_event_loop() -> None:
    assert issubclass(uringloop.Loop, asyncio.AbstractEventLoop)
    assert issubclass(uringloop.Loop, asyncio.BaseEventLoop)
    loop = uringloop.new_event_loop()
    try:
        assert isinstance(loop, uringloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_features_are_frozen() -> None:
    loop = uringloop.new_event_loop()
    try:
        f = loop.features
        assert isinstance(f, uringloop.Features)
        with pytest.raises(dataclasses.FrozenInstanceError):
            f.buf_ring = False  # type: ignore[misc]
        with pytest.raises(AttributeError):
            loop.features = f  # type: ignore[misc]
        for name in ("setup_flags", "kernel_features", "ops", "disabled"):
            assert isinstance(getattr(f, name), frozenset), name
        assert hash(f) == hash(loop.features)   # hashable all the way down
        assert loop.features is f
        assert f.summary()["ops"] == f.ops
    finally:
        loop.close()
    assert loop.features is f                    # still readable after close()


def test_statistics() -> None:
    loop = uringloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        idle = loop.statistics()
        assert isinstance(idle, uringloop.LoopStatistics)
        with pytest.raises(dataclasses.FrozenInstanceError):
            idle.enters = 0  # type: ignore[misc]

        async def main() -> tuple[int, bytes]:
            task = asyncio.ensure_future(loop.sock_recv(a, 16))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            waiting = loop.statistics().ops_in_flight   # the receive is in the kernel
            await loop.sock_sendall(b, b"ping")
            return waiting, await asyncio.wait_for(task, GUARD)

        waiting, data = loop.run_until_complete(main())
        assert data == b"ping"
        busy = loop.statistics()
        assert waiting > busy.ops_in_flight >= 0
        assert busy.sqes_submitted > idle.sqes_submitted
        assert busy.cqes_reaped > idle.cqes_reaped
        assert busy.enters > idle.enters
        assert busy.cq_overflows == 0
    finally:
        loop.close()
        a.close()
        b.close()
    closed = loop.statistics()
    assert closed.ops_in_flight == 0


def test_public_names() -> None:
    for name in uringloop.__all__:
        assert getattr(uringloop, name) is not None, name
    assert issubclass(uringloop.UringUnavailableError, OSError)
    # The file API is public, but a star import must not shadow builtins.open.
    for name in ("open", "stat", "rename", "unlink", "mkdir"):
        assert callable(getattr(uringloop, name)) and name not in uringloop.__all__
    assert uringloop.__version__ == importlib.metadata.version("uringloop")


# ---------------------------------------------------------------------------
# python -m uringloop: --help, and run


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


PROBE_SCRIPT = """
    import asyncio, json, os, sys

    async def main():
        return type(asyncio.get_running_loop()).__module__ + "." + \\
            type(asyncio.get_running_loop()).__qualname__

    def via_new_event_loop():
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    with asyncio.Runner() as runner:
        via_runner = runner.run(main())
    print(json.dumps({
        "asyncio.run": asyncio.run(main()),
        "Runner": via_runner,
        "new_event_loop": via_new_event_loop(),
        "argv": sys.argv,
        "name": __name__,
        "path0": sys.path[0],
    }))
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""
LOOP_NAME = "uringloop._loop.Loop"


def _probe_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_help() -> None:
    proc = cli("-m", "uringloop", "--help")
    assert proc.returncode == 0
    assert "doctor" in proc.stdout and "run" in proc.stdout
    proc = cli("-m", "uringloop", "run", "--help")
    assert proc.returncode == 0
    assert "script.py" in proc.stdout and "--fallback" in proc.stdout
    proc = cli("-m", "uringloop", "--version")
    assert proc.stdout.strip() == f"uringloop {uringloop.__version__}"


def test_cli_usage_errors() -> None:
    assert cli("-m", "uringloop").returncode == 2            # no command: help
    proc = cli("-m", "uringloop", "run")
    assert proc.returncode == 2 and "script" in proc.stderr
    proc = cli("-m", "uringloop", "run", "--nope", "x.py")
    assert proc.returncode == 2 and "--nope" in proc.stderr
    assert cli("-m", "uringloop", "nonsense").returncode == 2


def test_cli_run_script(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE_SCRIPT))
    # Everything after the script is the script's, options included; warnings
    # are errors, so installing the policy must make no deprecation noise.
    proc = cli("-W", "error", "-m", "uringloop", "run", str(script), "a", "--flag", "-m",
               cwd=tmp_path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    result = _probe_result(proc)
    assert result["asyncio.run"] == result["Runner"] == result["new_event_loop"] == LOOP_NAME
    assert result["argv"] == [str(script), "a", "--flag", "-m"]
    assert result["name"] == "__main__"
    assert result["path0"] == str(tmp_path)      # as `python probe.py`


def test_cli_run_exit_code_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE_SCRIPT))
    proc = cli("-m", "uringloop", "run", str(script), env={"PROBE_EXIT": "3"})
    assert proc.returncode == 3
    failing = tmp_path / "failing.py"
    failing.write_text("import asyncio\n\nasync def main():\n    raise KeyError('boom')\n\n"
                       "asyncio.run(main())\n")
    proc = cli("-m", "uringloop", "run", str(failing))
    assert proc.returncode == 1
    assert "KeyError: 'boom'" in proc.stderr


def test_cli_run_module(tmp_path: Path) -> None:
    pkg = tmp_path / "probepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent(PROBE_SCRIPT))
    proc = cli("-m", "uringloop", "run", "-m", "probepkg", "x", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = _probe_result(proc)
    assert result["asyncio.run"] == LOOP_NAME
    assert result["argv"] == [str(pkg / "__main__.py"), "x", "-y"]
    assert result["name"] == "__main__"


def test_cli_run_fallback_flag_sets_the_env(tmp_path: Path) -> None:
    script = tmp_path / "env.py"
    script.write_text("import os\nprint(os.environ.get('URINGLOOP_FALLBACK'))\n")
    assert cli("-m", "uringloop", "run", "--fallback", str(script)).stdout.strip() == "1"
    assert cli("-m", "uringloop", "run", str(script),
               env={"URINGLOOP_FALLBACK": ""}).stdout.strip() == ""


def test_cli_run_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           restore_policy: None) -> None:
    """main(["run", ...]) in-process: the script runs as __main__ with its own argv."""
    import builtins

    from uringloop.__main__ import main as cli_main

    script = tmp_path / "inproc.py"
    script.write_text(textwrap.dedent("""
        import asyncio, sys
        loop = asyncio.new_event_loop()
        RESULT.append((__name__, sys.argv[1:], type(loop).__name__))
        loop.close()
    """))
    result: list[Any] = []
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(builtins, "RESULT", result, raising=False)
    assert cli_main(["run", str(script), "one"]) == 0
    assert result == [("__main__", ["one"], "Loop")]
    assert sys.argv == [str(script), "one"]
