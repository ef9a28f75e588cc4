"""Running a test suite on uringloop: the snippets of docs/api.md, in a real pytest.

* pytest-asyncio (1.5+): the ``pytest_asyncio_loop_factories`` hook in a
  conftest.py -- one factory (every async test on uringloop) or two (each test
  on both loops, ids ``[asyncio]`` and ``[uringloop]``);
* anyio's pytest plugin: an ``anyio_backend`` fixture with ``loop_factory``.

Each runs in a separate pytest process over a tiny project written to a
temporary directory; the tests there record the loop they ran on.  The same
project without the snippet is run too, and must fail, so that a pass means
the snippet did it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from procutil import require

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def doc_snippet(marker: str, index: int = 0) -> str:
    """The `index`-th ```python block of docs/api.md containing `marker`: the
    tests run the documented snippets themselves, so the docs cannot drift."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
              if marker in b]
    assert len(blocks) > index, f"no snippet with {marker!r} in {API_DOC}"
    return blocks[index]

INI = """
    [pytest]
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
"""

SNIPPET_ONE = '''
    # conftest.py -- every pytest-asyncio test runs on uringloop
    import uringloop

    def pytest_asyncio_loop_factories(config, item):
        return {"uringloop": uringloop.new_event_loop}
'''

SNIPPET_BOTH = '''
    # conftest.py -- every pytest-asyncio test runs twice: [asyncio] and [uringloop]
    import asyncio
    import uringloop

    def pytest_asyncio_loop_factories(config, item):
        return {"asyncio": asyncio.new_event_loop, "uringloop": uringloop.new_event_loop}
'''

TESTS = '''
    import asyncio, json, os
    import pytest
    import pytest_asyncio
    import uringloop

    def record(name):
        loop = asyncio.get_running_loop()
        with open(os.environ["LOOP_RECORD"], "a") as f:
            f.write(json.dumps([name, type(loop).__module__]) + "\\n")

    @pytest_asyncio.fixture
    async def server():
        record("fixture")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        yield server
        server.close()
        await server.wait_closed()

    @pytest.mark.asyncio
    async def test_on_uringloop(server):
        record("test")
        assert isinstance(asyncio.get_running_loop(), uringloop.Loop)

    @pytest.mark.asyncio
    async def test_io(server):
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
'''

ANYIO_CONFTEST = '''
    # conftest.py -- anyio's pytest plugin, on uringloop
    import pytest
    import uringloop

    @pytest.fixture
    def anyio_backend():
        return ("asyncio", {"loop_factory": uringloop.new_event_loop})
'''

ANYIO_TESTS = '''
    import asyncio, json, os
    import anyio
    import pytest
    import uringloop

    @pytest.mark.anyio
    async def test_on_uringloop():
        loop = asyncio.get_running_loop()
        with open(os.environ["LOOP_RECORD"], "a") as f:
            f.write(json.dumps(["anyio", type(loop).__module__]) + "\\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0.01)
        assert isinstance(loop, uringloop.Loop)
'''


def run_pytest(project: Path, conftest: str | None, tests: str, *args: str
               ) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    project.mkdir()
    (project / "pytest.ini").write_text(textwrap.dedent(INI))
    if conftest is not None:
        (project / "conftest.py").write_text(textwrap.dedent(conftest))
    (project / "test_tiny.py").write_text(textwrap.dedent(tests))
    record = project / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["LOOP_RECORD"] = str(record)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "error",
         "--rootdir", str(project), "-c", str(project / "pytest.ini"), str(project), *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = record.read_text().splitlines() if record.exists() else []
    return proc, [json.loads(line) for line in lines]


def test_the_snippets_here_are_the_documented_ones() -> None:
    def code(text: str) -> list[str]:
        return [line for line in textwrap.dedent(text).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert code(SNIPPET_ONE) == code(doc_snippet("def pytest_asyncio_loop_factories", 0))
    assert code(SNIPPET_BOTH) == code(doc_snippet("def pytest_asyncio_loop_factories", 1))
    assert code(ANYIO_CONFTEST) == code(doc_snippet("def anyio_backend"))


def test_pytest_asyncio_hook_one_factory(tmp_path: Path) -> None:
    require("pytest_asyncio")
    proc, record = run_pytest(tmp_path / "one", SNIPPET_ONE, TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
    # Fixtures and tests alike ran on uringloop.
    assert sorted(record) == [["fixture", "uringloop._loop"]] * 2 + [["test", "uringloop._loop"]]


def test_pytest_asyncio_hook_both_loops(tmp_path: Path) -> None:
    require("pytest_asyncio")
    tests = TESTS.replace("assert isinstance(asyncio.get_running_loop(), uringloop.Loop)",
                          "pass")
    proc, record = run_pytest(tmp_path / "both", SNIPPET_BOTH, tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout
    assert "test_on_uringloop[asyncio] PASSED" in proc.stdout
    assert "test_on_uringloop[uringloop] PASSED" in proc.stdout
    tests_ran = sorted(m for what, m in record if what == "test")
    assert tests_ran == ["asyncio.unix_events", "uringloop._loop"]


def test_without_the_hook_the_tests_run_on_stock_asyncio(tmp_path: Path) -> None:
    """The control: same project, no conftest -- the loop check must fail."""
    require("pytest_asyncio")
    proc, record = run_pytest(tmp_path / "none", None, TESTS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert ["test", "asyncio.unix_events"] in record


def test_anyio_pytest_plugin(tmp_path: Path) -> None:
    require("anyio")
    proc, record = run_pytest(tmp_path / "anyio", ANYIO_CONFTEST, ANYIO_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert record == [["anyio", "uringloop._loop"]]
