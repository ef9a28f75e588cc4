"""Cancellation at every await point, and many concurrent operations.

The top-level teardown fails a test that leaks an fd or leaves an operation in
flight.  Where cancellation races a completion, each test runs every
interleaving it can reach (cancel after 0, 1, 2... loop iterations) and checks
the documented outcome: reads that were cancelled leave the position where it
was (a retry reads the same bytes); a cancelled open never leaks its fd; the
caller's readinto buffer is never written after a cancellation.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

import pytest

import uringloop

pytestmark = pytest.mark.timeout(60)

DATA = bytes(range(256)) * 64


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    p = tmp_path / "data"
    p.write_bytes(DATA)
    return p


async def _cancel_after(coro: Any, steps: int) -> tuple[bool, Any]:
    """Run coro as a task, cancel it after `steps` loop iterations.

    Returns (cancelled, result)."""
    task = asyncio.ensure_future(coro)
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        return False, await task
    except asyncio.CancelledError:
        return True, None


STEPS = range(0, 6)


def test_cancel_open_regular_file(run: Any, path: pathlib.Path) -> None:
    async def main() -> set[bool]:
        seen = set()
        for mode in ("rb", "r", "r+b", "ab"):
            for steps in STEPS:
                cancelled, f = await _cancel_after(uringloop.open(path, mode), steps)
                seen.add(cancelled)
                if not cancelled:
                    await f.close()
        return seen
    assert True in run(main())


def test_cancel_open_blocked_on_fifo(run: Any, tmp_path: pathlib.Path) -> None:
    """An open that blocks in the kernel (a FIFO without a reader, opened for
    writing: io_uring's non-blocking first try fails, an io-wq worker waits)
    is cancelled there."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        for steps in (1, 2, 3):
            cancelled, f = await _cancel_after(uringloop.open(fifo, "wb"), steps)
            assert cancelled
    run(main())


def test_cancel_open_that_succeeds_anyway_closes_the_fd(
        run: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader arrives as the cancel is requested: the kernel opens the FIFO
    anyway; the late completion closes the fd (the teardown checks for leaks)."""
    from uringloop import _files
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    closed: list[int] = []
    close_quietly = _files._close_quietly

    def spy(fd: int) -> None:
        closed.append(fd)
        close_quietly(fd)
    monkeypatch.setattr(_files, "_close_quietly", spy)

    async def main() -> None:
        for steps in (1, 2, 3):
            task = asyncio.ensure_future(uringloop.open(fifo, "wb"))
            for _ in range(steps):
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)        # the open is blocked in an io-wq worker
            w = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            task.cancel()
            try:
                f = await task
            except asyncio.CancelledError:
                pass
            else:
                await f.close()
            os.close(w)
            for _ in range(5):               # let a late completion arrive
                await asyncio.sleep(0.01)
    run(main())
    # On this kernel the worker finishes the open before the cancel lands, so
    # the unwanted-result path (close the fd on completion) is what ran.
    assert closed


@pytest.mark.parametrize("buffering", [-1, 0])
def test_cancel_read_keeps_the_position(run: Any, path: pathlib.Path, buffering: int) -> None:
    async def main() -> set[bool]:
        seen = set()
        async with uringloop.open(path, "rb", buffering=buffering) as f:
            for steps in STEPS:
                for method in ("read", "readline", "read_all", "read1", "pread"):
                    await f.seek(100)
                    if method == "read":
                        coro = f.read(10)
                    elif method == "readline":
                        coro = f.readline()
                    elif method == "read1":
                        coro = f.read1(10)
                    elif method == "pread":
                        coro = f.pread(10, 50)
                    else:
                        coro = f.read()
                    cancelled, data = await _cancel_after(coro, steps)
                    seen.add(cancelled)
                    if cancelled:
                        assert f.tell() == 100
                        assert (await f.read(10)) == DATA[100:110]
                    else:
                        assert data and (DATA[100:].startswith(data) or method == "pread")
        return seen
    assert run(main()) == {True, False}


def test_cancel_text_read(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t"
    p.write_text("".join(f"line {i}\n" for i in range(2000)), encoding="utf-8")

    async def main() -> None:
        async with uringloop.open(p, encoding="utf-8") as f:
            for steps in STEPS:
                await f.seek(0)
                cancelled, line = await _cancel_after(f.readline(), steps)
                if cancelled:
                    assert f.tell() == 0
                assert await f.readline() == ("line 1\n" if not cancelled else "line 0\n")
    run(main())


def test_cancel_pipe_read_and_readinto(run: Any) -> None:
    async def main() -> None:
        r, w = os.pipe()
        async with uringloop.open(r, "rb", buffering=0) as f:
            # Nothing to read: the READ waits in the kernel and is cancelled there.
            cancelled, _ = await _cancel_after(f.read(10), 2)
            assert cancelled
            buf = bytearray(b"\xaa" * 16)
            for steps in (1, 2, 3):
                task = asyncio.ensure_future(f.readinto(buf))
                for _ in range(steps):
                    await asyncio.sleep(0)
                os.write(w, b"late bytes")      # may complete the cancelled read
                task.cancel()
                try:
                    n = await task
                except asyncio.CancelledError:
                    for _ in range(3):
                        await asyncio.sleep(0)
                    assert buf == b"\xaa" * 16   # never written after cancellation
                else:
                    assert buf[:n] == b"late bytes"[:n]
                    buf[:] = b"\xaa" * 16
            os.close(w)
            assert await f.read(100) in (b"", b"late bytes", b"late byteslate bytes",
                                         b"late byteslate byteslate bytes")
    run(main())


def test_cancel_write_on_a_full_pipe_then_flush_on_close(run: Any) -> None:
    async def main() -> None:
        r, w = os.pipe()
        size = 1 << 16
        f = await uringloop.open(w, "wb", buffering=size)
        await f.write(b"x" * (size - 1))
        # Fill the pipe so the flush's WRITE blocks in the kernel.
        os.set_blocking(w, False)
        filled = 0
        try:
            while True:
                filled += os.write(w, b"f" * 4096)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)
        cancelled, _ = await _cancel_after(f.flush(), 2)
        assert cancelled
        drained = b""
        loop = asyncio.get_running_loop()
        close = asyncio.ensure_future(f.close())   # flushes what is left, then closes
        while not close.done():
            chunk = await loop.run_in_executor(None, os.read, r, 1 << 20)
            drained += chunk
            if not chunk:
                break
        await close
        while chunk := os.read(r, 1 << 20):
            drained += chunk
        os.close(r)
        assert drained.count(b"f") == filled
        # What the cancelled write got out plus the retry: at least all the x's.
        assert drained.count(b"x") >= size - 1
    run(main())


def test_cancel_write_and_flush_regular_file(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "w"

    async def main() -> None:
        async with uringloop.open(p, "wb", buffering=8) as f:
            for steps in STEPS:
                pos = f.tell()
                cancelled, _ = await _cancel_after(f.write(b"0123456789"), steps)
                if cancelled:
                    await f.seek(pos)                    # the position was not advanced
                    await f.write(b"0123456789")         # an idempotent retry
            await f.write(b"end")
            for coro_fn in (f.flush, f.fsync, lambda: f.truncate(60), f.stat,
                            lambda: f.seek(0, 2)):
                for steps in STEPS:
                    await _cancel_after(coro_fn(), steps)
    run(main())
    assert p.read_bytes() == b"0123456789" * 6 + b"end" or \
        p.read_bytes().startswith(b"0123456789" * 6)


def test_cancel_close_still_closes(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        for steps in STEPS:
            f = await uringloop.open(path, "r+b")
            await f.write(b"dirty")
            fd = f.fileno()
            cancelled, _ = await _cancel_after(f.close(), steps)
            for _ in range(3):
                await asyncio.sleep(0)
            if f.closed:
                await f.close()
                with pytest.raises(OSError):
                    os.fstat(fd)
            else:
                await f.close()
    run(main())
    assert path.read_bytes()[:5] == b"dirty"


def test_cancel_path_operations(run: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        for steps in STEPS:
            d = tmp_path / f"d{steps}"
            await _cancel_after(uringloop.mkdir(d), steps)
            await _cancel_after(uringloop.stat(tmp_path), steps)
            if d.exists():
                (d / "f").write_bytes(b"")
                await _cancel_after(uringloop.rename(d / "f", d / "g"), steps)
                name = d / "g" if (d / "g").exists() else d / "f"
                await _cancel_after(uringloop.unlink(name), steps)
    run(main())


def test_cancel_waiting_on_the_lock(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        async with uringloop.open(path, "rb") as f:
            tasks = [asyncio.ensure_future(f.read(100)) for _ in range(10)]
            await asyncio.sleep(0)
            for t in tasks[::2]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            data = [r for r in results if isinstance(r, bytes)]
            assert b"".join(data) == DATA[:100 * len(data)]
    run(main())


def test_ops_left_in_flight_when_the_runner_ends(run: Any) -> None:
    """Pending reads on a pipe at loop teardown are cancelled and drained."""
    r, w = os.pipe()

    async def main() -> Any:
        f = await uringloop.open(r, "rb", buffering=0)
        for _ in range(3):
            asyncio.ensure_future(f.read(10))
        await asyncio.sleep(0.01)
        return f
    f = run(main())
    os.close(w)
    asyncio.run(f.close())    # the loop is gone: the fd is closed synchronously


def test_many_concurrent_preads(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        async with uringloop.open(path, "rb") as f:
            offsets = [(i * 37) % len(DATA) for i in range(1000)]
            got = await asyncio.gather(*(f.pread(64, off) for off in offsets))
            assert got == [DATA[off:off + 64] for off in offsets]
    run(main())


def test_many_files_concurrently(run: Any, tmp_path: pathlib.Path) -> None:
    paths = [tmp_path / f"f{i}" for i in range(200)]

    async def write(i: int, p: pathlib.Path) -> None:
        async with uringloop.open(p, "wb") as f:
            await f.write(b"%d\n" % i * 100)

    async def read(p: pathlib.Path) -> bytes:
        async with uringloop.open(p, "rb") as f:
            return await f.read()

    async def main() -> None:
        await asyncio.gather(*(write(i, p) for i, p in enumerate(paths)))
        got = await asyncio.gather(*(read(p) for p in paths))
        assert got == [b"%d\n" % i * 100 for i in range(200)]
        sts = await asyncio.gather(*(uringloop.stat(p) for p in paths))
        assert [st.st_size for st in sts] == [len(g) for g in got]
        await asyncio.gather(*(uringloop.unlink(p) for p in paths))
        assert os.listdir(tmp_path) == []
    run(main())


def test_concurrent_pwrites(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "pw"

    async def main() -> None:
        async with uringloop.open(p, "w+b") as f:
            await asyncio.gather(*(f.pwrite(bytes([i]) * 100, i * 100) for i in range(256)))
            await f.seek(0)
            assert await f.read() == b"".join(bytes([i]) * 100 for i in range(256))
    run(main())
