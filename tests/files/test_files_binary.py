"""Binary files: every method, against the built-in ``open`` as the oracle."""

from __future__ import annotations

import builtins
import io
import os
import pathlib
from typing import Any

import pytest

import uringloop

pytestmark = pytest.mark.timeout(60)

DATA = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(3000)) + b"no newline"


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    p = tmp_path / "data.bin"
    p.write_bytes(DATA)
    return p


@pytest.mark.parametrize("buffering", [-1, 0, 16, 4096])
def test_read_sizes_match_builtin(run: Any, path: pathlib.Path, buffering: int) -> None:
    sizes = [0, 1, 7, 100, 5000, 70000, 3, 200000, -1, 10]

    async def main() -> list[bytes]:
        out = []
        async with uringloop.open(path, "rb", buffering=buffering) as f:
            for n in sizes:
                out.append(await f.read(n))
                out.append(f.tell().to_bytes(8, "little"))
        return out

    with builtins.open(path, "rb", buffering=buffering) as g:
        expected = []
        for n in sizes:
            expected.append(g.read(n))
            expected.append(g.tell().to_bytes(8, "little"))
    assert run(main()) == expected


def test_read_all_and_none(run: Any, path: pathlib.Path) -> None:
    async def main() -> tuple[bytes, bytes, bytes]:
        async with uringloop.open(path, "rb") as f:
            a = await f.read()
            b = await f.read()
            await f.seek(5)
            c = await f.read(None)
        return a, b, c
    assert run(main()) == (DATA, b"", DATA[5:])


@pytest.mark.parametrize("buffering", [-1, 0, 10])
def test_readline_iteration_readlines(run: Any, path: pathlib.Path, buffering: int) -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[bytes], bytes]:
        async with uringloop.open(str(path), "rb", buffering=buffering) as f:
            lines = [line async for line in f]
            await f.seek(0)
            rl = await f.readlines()
            await f.seek(0)
            sized = [await f.readline(5), await f.readline(5), await f.readline(100),
                     await f.readline(0), await f.readline(None)]
            await f.seek(len(DATA) - 3)
            tail = await f.readline()
        return lines, rl, sized, tail

    with builtins.open(path, "rb", buffering=buffering) as g:
        exp_lines = list(g)
        g.seek(0)
        exp_sized = [g.readline(5), g.readline(5), g.readline(100), g.readline(0),
                     g.readline(None)]
    lines, rl, sized, tail = run(main())
    assert lines == exp_lines == rl
    assert sized == exp_sized
    assert tail == b"ine"


def test_readlines_hint(run: Any, path: pathlib.Path) -> None:
    async def main() -> list[bytes]:
        async with uringloop.open(path, "rb") as f:
            return await f.readlines(30)
    with builtins.open(path, "rb") as g:
        assert run(main()) == g.readlines(30)


@pytest.mark.parametrize("buffering", [-1, 0])
def test_readinto_and_read1(run: Any, path: pathlib.Path, buffering: int) -> None:
    async def main() -> tuple[int, bytes, bytes, int]:
        buf = bytearray(1000)
        async with uringloop.open(path, "rb", buffering=buffering) as f:
            n = await f.readinto(buf)
            r1 = await f.read1(50)
            mv = memoryview(bytearray(8)).cast("B")
            await f.readinto(mv)
            with pytest.raises(TypeError):
                await f.readinto(b"readonly")
            await f.seek(len(DATA) - 5)
            n_end = await f.readinto(bytearray(100))
        return n, bytes(buf), r1, n_end
    n, buf, r1, n_end = run(main())
    assert (n, buf, n_end) == (1000, DATA[:1000], 5)
    assert r1 == DATA[1000:1050]


def test_read1_default_size(run: Any, path: pathlib.Path) -> None:
    async def main() -> bytes:
        async with uringloop.open(path, "rb") as f:
            return await f.read1()
    data = run(main())
    assert 0 < len(data) and DATA.startswith(data)


@pytest.mark.parametrize("buffering", [-1, 0, 3])
def test_write_modes_match_builtin(run: Any, tmp_path: pathlib.Path, buffering: int) -> None:
    chunks = [b"abc", bytearray(b"defg"), memoryview(b"0123456789" * 500), b"", b"\n" * 3]

    def oracle(name: str, mode: str) -> bytes:
        p = tmp_path / name
        with builtins.open(p, mode, buffering=buffering) as g:
            for c in chunks:
                g.write(c)
            g.seek(2)
            g.write(b"ZZ")
            g.seek(0, 2)
            g.write(b"END")
        return p.read_bytes()

    async def ours(name: str, mode: str) -> bytes:
        p = tmp_path / name
        async with uringloop.open(p, mode, buffering=buffering) as f:
            for c in chunks:
                assert await f.write(c) == len(c)
            assert await f.seek(2) == 2
            await f.write(b"ZZ")
            await f.seek(0, 2)
            await f.write(b"END")
        return p.read_bytes()

    for mode in ("wb", "w+b", "xb"):
        assert run(ours("u" + mode.replace("+", "p"), mode)) == \
            oracle("b" + mode.replace("+", "p"), mode), mode


def test_append_modes(run: Any, tmp_path: pathlib.Path) -> None:
    for p in (tmp_path / "a", tmp_path / "b"):
        p.write_bytes(b"start\n")

    # Unbuffered oracle: io.BufferedRandom in a+ mode serves a read after an
    # appending write from its stale read-ahead (the write lands at the end of
    # the file, the buffer pretends it landed at the position); we follow the file.
    with builtins.open(tmp_path / "b", "a+b", buffering=0) as g:
        exp = [g.tell()]
        g.write(b"one\n")
        exp.append(g.tell())
        g.seek(0)
        exp.append(g.read(3))
        g.write(b"two\n")
        exp.append(g.tell())
        g.seek(0)
        exp.append(g.read())

    async def main() -> list[Any]:
        async with uringloop.open(tmp_path / "a", "a+b") as f:
            got = [f.tell()]
            await f.write(b"one\n")
            got.append(f.tell())
            await f.seek(0)
            got.append(await f.read(3))
            await f.write(b"two\n")
            got.append(f.tell())
            await f.seek(0)
            got.append(await f.read())
        async with uringloop.open(tmp_path / "a", "ab", buffering=0) as f:
            await f.write(b"three\n")
        return got
    assert run(main()) == exp
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() + b"three\n"


def test_read_write_plus(run: Any, path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    other = tmp_path / "oracle"
    other.write_bytes(DATA)
    with builtins.open(other, "r+b") as g:
        exp = [g.read(10), g.write(b"WXYZ"), g.tell(), g.read(5), g.seek(-3, 1),
               g.write(b"!!"), g.seek(0), g.read(20), g.seek(-4, 2), g.read()]

    async def main() -> list[Any]:
        async with uringloop.open(path, "r+b") as f:
            return [await f.read(10), await f.write(b"WXYZ"), f.tell(), await f.read(5),
                    await f.seek(-3, 1), await f.write(b"!!"), await f.seek(0),
                    await f.read(20), await f.seek(-4, 2), await f.read()]
    assert run(main()) == exp
    assert path.read_bytes() == other.read_bytes()


def test_pread_pwrite(run: Any, path: pathlib.Path) -> None:
    async def main() -> list[Any]:
        async with uringloop.open(path, "r+b") as f:
            await f.read(4)
            out = [await f.pread(10, 100), f.tell()]
            await f.write(b"HEAD")          # buffered: pread flushes it first
            out.append(await f.pread(8, 0))
            out.append(await f.pwrite(b"PW", 2))
            out.append(f.tell())
            out.append(await f.read(4))
            out.append(await f.pread(10, len(DATA) + 10))
            with pytest.raises(ValueError):
                await f.pread(1, -1)
            with pytest.raises(ValueError):
                await f.pwrite(b"x", -1)
        return out
    assert run(main()) == [DATA[100:110], 4, DATA[:4] + b"HEAD",
                           2, 8, DATA[8:12], b""]
    assert path.read_bytes()[:8] == DATA[:2] + b"PW" + b"HEAD"


def test_flush_fsync_truncate(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t"

    async def main() -> list[Any]:
        out = []
        async with uringloop.open(p, "w+b") as f:
            await f.write(b"0123456789")
            out.append(p.read_bytes())         # still buffered
            await f.flush()
            out.append(p.read_bytes())
            await f.fsync()
            await f.fsync(datasync=True)
            out.append(await f.truncate(4))
            out.append(f.tell())               # unchanged, as the built-in
            out.append(p.read_bytes())
            await f.seek(2)
            out.append(await f.truncate())
            out.append(p.read_bytes())
            await f.write(b"abc")
            out.append(await f.truncate())     # flushes first
            with pytest.raises(OSError):
                await f.truncate(-1)
            st = await f.stat()
            out.append(st.st_size)
        return out
    assert run(main()) == [b"", b"0123456789", 4, 10, b"0123", 2, b"01", 5, 5]
    assert p.read_bytes() == b"01abc"


def test_close_is_idempotent_and_closes(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        f = await uringloop.open(path, "rb")
        fd = f.fileno()
        assert not f.closed and f.readable() and not f.writable() and f.seekable()
        assert not f.isatty()
        assert "data.bin" in repr(f)
        await f.close()
        await f.close()
        assert f.closed and "closed" in repr(f)
        with pytest.raises(OSError):
            os.fstat(fd)
        for call in (f.read(), f.write(b"x"), f.seek(0), f.flush(), f.readline(),
                     f.pread(1, 0), f.fsync(), f.stat()):
            with pytest.raises(ValueError, match="closed file"):
                await call
        with pytest.raises(ValueError):
            f.tell()
        with pytest.raises(ValueError):
            f.fileno()
    run(main())


def test_unsupported_operations(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        async with uringloop.open(path, "rb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write(b"x")
            with pytest.raises(io.UnsupportedOperation):
                await f.truncate(0)
            with pytest.raises(io.UnsupportedOperation):
                await f.pwrite(b"x", 0)
            with pytest.raises(ValueError):
                await f.seek(0, 7)
            with pytest.raises(OSError):
                await f.seek(-1)
        async with uringloop.open(path, "ab") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.read()
            with pytest.raises(TypeError):
                await f.write("text")
    run(main())


def test_fd_and_closefd(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        fd = os.open(path, os.O_RDONLY)
        os.lseek(fd, 5, os.SEEK_SET)
        async with uringloop.open(fd, "rb", closefd=False) as f:
            assert f.tell() == 5
            assert await f.read(5) == DATA[5:10]
        os.fstat(fd)                           # still open
        async with uringloop.open(fd, "rb") as f:
            assert f.name == fd
        with pytest.raises(OSError):
            os.fstat(fd)
        with pytest.raises(ValueError):
            uringloop.open(path, "rb", closefd=False)
        with pytest.raises(ValueError):
            uringloop.open(-1, "rb")
    run(main())


def test_bytes_and_pathlike_names(run: Any, path: pathlib.Path) -> None:
    async def main() -> None:
        for name in (path, str(path), os.fsencode(path)):
            async with uringloop.open(name, "rb") as f:
                assert f.name == os.fspath(name) and await f.read(4) == DATA[:4]
        f = await uringloop.open(path, "rb")     # awaitable as well as a context manager
        await f.close()
        async with await uringloop.open(path, "rb") as f:
            assert await f.read(1) == DATA[:1]
    run(main())


def test_pipe_non_seekable(run: Any) -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.write(w, b"one\ntwo\nthree")
        os.close(w)
        async with uringloop.open(r, "rb") as f:
            assert not f.seekable()
            with pytest.raises(OSError):
                f.tell()
            with pytest.raises(OSError):
                await f.seek(0)
            with pytest.raises(OSError):
                await f.pread(1, 0)
            assert await f.readline() == b"one\n"
            assert await f.read() == b"two\nthree"
        r, w = os.pipe()
        async with uringloop.open(w, "wb") as f:
            await f.write(b"via ring")
        assert os.read(r, 100) == b"via ring"
        os.close(r)
    run(main())


def test_large_file_byte_for_byte(run: Any, tmp_path: pathlib.Path) -> None:
    """64 MiB written and read back through the ring, checked against the disk."""
    p = tmp_path / "big"
    block = os.urandom(1 << 20)
    blob = b"".join(bytes([i]) + block[1:] for i in range(64))

    async def main() -> tuple[bytes, bytes, int]:
        async with uringloop.open(p, "wb") as f:
            await f.write(blob)
        async with uringloop.open(p, "rb") as f:
            whole = await f.read()
        async with uringloop.open(p, "rb") as f:
            parts = []
            while chunk := await f.read(3 << 20):
                parts.append(chunk)
            n = 0
            async with uringloop.open(p, "rb", buffering=0) as g:
                buf = bytearray(1 << 20)
                while got := await g.readinto(buf):
                    assert buf[:got] == blob[n:n + got]
                    n += got
        return whole, b"".join(parts), n
    whole, joined, n = run(main())
    assert whole == blob and joined == blob and n == len(blob)
    assert p.read_bytes() == blob


def test_gc_unclosed_warns_and_closes(run: Any, path: pathlib.Path) -> None:
    import gc

    async def main() -> int:
        f = await uringloop.open(path, "rb")
        fd = f.fileno()
        with pytest.warns(ResourceWarning, match="unclosed file"):
            del f
            gc.collect()
        return fd
    fd = run(main())
    with pytest.raises(OSError):
        os.fstat(fd)


def test_statistics_after_use(run: Any, path: pathlib.Path) -> None:
    import asyncio

    async def main() -> tuple[int, int]:
        loop: Any = asyncio.get_running_loop()
        before = loop.statistics().ops_in_flight      # the self-pipe read
        async with uringloop.open(path, "rb") as f:
            await f.read(10)
        return before, loop.statistics().ops_in_flight
    before, after = run(main())
    assert before == after


def test_nonblocking_pipe_waits_on_the_ring(run: Any) -> None:
    """An O_NONBLOCK fd makes the kernel answer EAGAIN: we wait for readiness."""
    import asyncio

    async def main() -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        async with uringloop.open(r, "rb", buffering=0) as f, \
                uringloop.open(w, "wb", buffering=0) as g:
            reader = asyncio.ensure_future(f.read(5))
            await asyncio.sleep(0.01)
            assert not reader.done()
            payload = b"p" * (1 << 20)           # more than the pipe holds
            writer = asyncio.ensure_future(g.write(payload))
            got = await reader
            rest = b""
            while len(got) + len(rest) < len(payload):
                rest += await f.read(1 << 16)
            await writer
            assert got + rest == payload
    run(main())


def test_big_write_bypasses_the_buffer(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "big"
    blob = os.urandom(3 << 20)

    async def main() -> None:
        async with uringloop.open(p, "wb") as f:
            await f.write(b"head")
            await f.write(blob)        # coalesced with the pending 4 bytes
            await f.write(blob)        # straight to the kernel
            assert f.tell() == 4 + 2 * len(blob)
    run(main())
    assert p.read_bytes() == b"head" + blob + blob


def test_writelines_and_mode_attributes(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "wl"

    async def main() -> None:
        async with uringloop.open(p, "wb") as f:
            await f.writelines([b"a\n", bytearray(b"b\n"), memoryview(b"c\n")])
            assert f.mode == "wb" and f.writable() and not f.readable()
    run(main())
    assert p.read_bytes() == b"a\nb\nc\n"


def test_fd_given_by_the_caller_stays_open_on_failure(run: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(IsADirectoryError):
                await uringloop.open(fd, "rb")
            os.fstat(fd)                      # not closed behind the caller's back
        finally:
            os.close(fd)
    run(main())


def test_character_devices(run: Any) -> None:
    async def main() -> None:
        async with uringloop.open("/dev/zero", "rb") as f:
            assert not f.seekable()
            assert await f.read(100) == b"\0" * 100
            assert await f.readline(10) == b"\0" * 10
        async with uringloop.open("/dev/null", "rb") as f:
            assert await f.read() == b""
        async with uringloop.open("/dev/null", "w", encoding="utf-8") as t:
            assert await t.write("discarded\n") == 10
    run(main())
