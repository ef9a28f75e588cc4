"""`python -m uringloop run script.py [args]`: an unmodified asyncio program on uringloop.

tests/test_public_api.py covers argv, __name__, sys.path[0], the exit code of
sys.exit(n), -m module and --fallback.  Here each program also runs as plain
`python script.py` (the oracle): exit status, stdout and the shape of stderr
must be the same, only the loop differs.

The program waits for its connection handler to finish before asyncio.run()
returns: on Python 3.11 an echo server that does not (Server.wait_closed() does
not wait for handlers there) logs a CancelledError on uringloop, whose EOF comes
one iteration later than stock's -- see test_eof_latency.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = '''
    """An ordinary asyncio program: argparse, a class pickled by reference, a
    server and a client, asyncio.run under the __main__ guard."""
    import argparse, asyncio, pickle, sys

    class Job:                  # pickling needs sys.modules["__main__"].Job
        def __init__(self, n):
            self.n = n

    async def main(argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("count", type=int)
        parser.add_argument("--exit", type=int, default=0)
        args = parser.parse_args(argv)
        handled = asyncio.Event()
        server = await asyncio.start_server(lambda r, w: echo(r, w, handled), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(args.count):
                writer.write(b"%d\\n" % i)
                print("echo", (await reader.readline()).decode().strip())
            writer.close()
            await writer.wait_closed()
            await handled.wait()        # the handler saw EOF (3.11's wait_closed does not wait)
        job = pickle.loads(pickle.dumps(Job(args.count)))
        print("job", job.n, type(job).__module__)
        print("LOOP", type(asyncio.get_running_loop()).__module__, file=sys.stderr)
        return args.exit

    async def echo(reader, writer, handled):
        while line := await reader.readline():
            writer.write(line)
        writer.close()
        handled.set()

    if __name__ == "__main__":
        sys.exit(asyncio.run(main(sys.argv[1:])))
'''

FAILING = '''
    import asyncio

    async def inner():
        await asyncio.sleep(0)
        raise ValueError("bad value in the program")

    async def main():
        await inner()

    asyncio.run(main())
'''


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "URINGLOOP_FALLBACK"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def both(tmp_path: Path, source: str, *args: str
         ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    plain = run("program.py", *args, cwd=tmp_path)
    ours = run("-m", "uringloop", "run", "program.py", *args, cwd=tmp_path)
    return plain, ours


@pytest.mark.parametrize("exit_code", [0, 7])
def test_same_output_and_exit_status_as_python(tmp_path: Path, exit_code: int) -> None:
    plain, ours = both(tmp_path, PROGRAM, "3", "--exit", str(exit_code))
    assert plain.returncode == ours.returncode == exit_code, ours.stderr
    assert ours.stdout == plain.stdout == "echo 0\necho 1\necho 2\njob 3 __main__\n"
    assert plain.stderr == "LOOP asyncio.unix_events\n"
    assert ours.stderr == "LOOP uringloop._loop\n"


def test_argument_errors_are_the_programs(tmp_path: Path) -> None:
    """argparse in the program sees the program's argv: same usage error, status 2."""
    plain, ours = both(tmp_path, PROGRAM, "not-a-number", "--flag")
    assert plain.returncode == ours.returncode == 2
    assert ours.stderr == plain.stderr
    assert "usage: program.py" in ours.stderr


def test_an_exception_gives_its_traceback_and_status_1(tmp_path: Path) -> None:
    plain, ours = both(tmp_path, FAILING)
    assert plain.returncode == ours.returncode == 1
    assert ours.stderr.startswith("Traceback (most recent call last):\n")
    assert ours.stderr.rstrip().endswith("ValueError: bad value in the program")

    def frames(stderr: str) -> list[tuple[str, str]]:
        return [(os.path.basename(f), fn) for f, fn in
                re.findall(r'File "([^"]+)", line \d+, in (\S+)', stderr)]
    # The program's frames, in order, and none of runpy's or uringloop's
    # (asyncio's own frames differ between loops only in their line numbers).
    program_frames = [f for f in frames(ours.stderr) if f[0] == "program.py"]
    assert program_frames == [("program.py", "<module>"), ("program.py", "main"),
                              ("program.py", "inner")]
    assert program_frames == [f for f in frames(plain.stderr) if f[0] == "program.py"]
    assert "runpy" not in ours.stderr and "uringloop" not in ours.stderr


def test_sys_exit_with_a_message(tmp_path: Path) -> None:
    plain, ours = both(tmp_path, "import sys\nsys.exit('giving up')\n")
    assert plain.returncode == ours.returncode == 1
    assert plain.stderr == ours.stderr == "giving up\n"


def test_a_missing_script(tmp_path: Path) -> None:
    plain = run("missing.py", cwd=tmp_path)
    ours = run("-m", "uringloop", "run", "missing.py", cwd=tmp_path)
    assert plain.returncode == ours.returncode == 2
    assert "can't open file" in ours.stderr and "missing.py" in ours.stderr
    assert "Traceback" not in ours.stderr


def test_module_form_runs_a_package_main(tmp_path: Path) -> None:
    pkg = tmp_path / "tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    plain = run("-m", "tool", "2", cwd=tmp_path)
    ours = run("-m", "uringloop", "run", "-m", "tool", "2", cwd=tmp_path)
    assert plain.returncode == ours.returncode == 0, ours.stderr
    assert ours.stdout == plain.stdout == "echo 0\necho 1\njob 2 __main__\n"
    assert ours.stderr == "LOOP uringloop._loop\n"
