"""Errors: the built-in open's exceptions (type, errno, filename), bad arguments,
the no-loop and stock-loop RuntimeError, and the path operations' errors."""

from __future__ import annotations

import asyncio
import builtins
import os
import pathlib
from typing import Any, Callable

import pytest

import uringloop

pytestmark = pytest.mark.timeout(60)


def _builtin_error(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as exc:   # noqa: BLE001
        return exc
    raise AssertionError("the built-in did not raise")


def _same(ours: BaseException, theirs: BaseException) -> None:
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, OSError):
        assert (ours.errno, ours.strerror, ours.filename, ours.filename2) == \
            (theirs.errno, theirs.strerror, theirs.filename, theirs.filename2)  # type: ignore[attr-defined]
    else:
        assert str(ours) == str(theirs)


def _permission_target(tmp_path: pathlib.Path) -> tuple[Any, str]:
    """A (path, mode) the built-in refuses with PermissionError, also as root."""
    p = tmp_path / "noaccess"
    p.write_bytes(b"secret")
    p.chmod(0)
    candidates = [(p, "rb"), (pathlib.Path("/proc/1/environ"), "wb"),
                  (pathlib.Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"), "wb")]
    for path, mode in candidates:
        try:
            builtins.open(path, mode).close()
        except PermissionError:
            return path, mode
        except OSError:
            continue
    raise AssertionError("no path refused with PermissionError here")


def test_open_errors_match_builtin(run: Any, tmp_path: pathlib.Path) -> None:
    (tmp_path / "exists").write_bytes(b"x")
    perm = _permission_target(tmp_path)
    cases: list[tuple[Any, str]] = [
        (tmp_path / "missing", "rb"),
        (str(tmp_path / "missing"), "r"),
        (os.fsencode(tmp_path / "missing"), "rb"),
        (tmp_path / "no" / "dir" / "f", "wb"),
        (tmp_path, "rb"),               # IsADirectoryError from the fstat check
        (str(tmp_path), "r"),
        (tmp_path, "wb"),               # IsADirectoryError from the kernel
        (tmp_path / "exists", "xb"),    # FileExistsError
        (tmp_path / "exists" / "sub", "rb"),   # NotADirectoryError
        perm,
    ]

    async def main() -> None:
        for name, mode in cases:
            theirs = _builtin_error(lambda: builtins.open(name, mode))
            with pytest.raises(OSError) as info:
                await uringloop.open(name, mode)
            _same(info.value, theirs)
            with pytest.raises(OSError) as info:
                async with uringloop.open(name, mode):
                    pass
            _same(info.value, theirs)
    run(main())


@pytest.mark.parametrize("mode", ["", "rw", "rr", "rb+b", "U", "rU", "tb", "wa", "r+w", "z",
                                  "+", "b", "t", "xa", "rt+b"])
def test_bad_mode_strings(run: Any, tmp_path: pathlib.Path, mode: str) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"")
    theirs = _builtin_error(lambda: builtins.open(p, mode))

    async def main() -> None:
        with pytest.raises(ValueError) as info:
            uringloop.open(p, mode)
        _same(info.value, theirs)
    run(main())


@pytest.mark.parametrize("kwargs", [
    {"mode": "rb", "encoding": "utf-8"},
    {"mode": "rb", "errors": "strict"},
    {"mode": "rb", "newline": "\n"},
    {"mode": "r", "buffering": 0},
    {"mode": "r", "newline": "x"},
    {"mode": "r", "encoding": "no-such-codec"},
    {"mode": 5},
    {"mode": "r", "encoding": 5},
    {"mode": "r", "newline": 5},
    {"mode": "r", "buffering": "big"},
])
def test_bad_arguments(run: Any, tmp_path: pathlib.Path, kwargs: dict[str, Any]) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"")
    theirs = _builtin_error(lambda: builtins.open(p, **kwargs))

    async def main() -> None:
        with pytest.raises(type(theirs)):
            uringloop.open(p, **kwargs)
    run(main())


def test_bad_file_arguments(run: Any) -> None:
    async def main() -> None:
        for bad in (None, 3.5, object()):
            with pytest.raises(TypeError):
                uringloop.open(bad)   # type: ignore[arg-type]
        with pytest.raises(ValueError, match="null"):
            await uringloop.open("a\0b")
        with pytest.raises(ValueError, match="null"):
            await uringloop.stat("a\0b")
    run(main())


def test_binary_line_buffering_warns(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f"

    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="line buffering"):
            f = uringloop.open(p, "wb", buffering=1)
        async with f as g:
            await g.write(b"x")
    run(main())
    assert p.read_bytes() == b"x"


def test_no_running_loop() -> None:
    for call in (lambda: uringloop.open("x"), lambda: uringloop.stat("x").send(None),
                 lambda: uringloop.unlink("x").send(None),
                 lambda: uringloop.rename("x", "y").send(None),
                 lambda: uringloop.mkdir("x").send(None)):
        with pytest.raises(RuntimeError, match="no running event loop"):
            call()


def test_stock_loop_is_a_clear_error(stock_run: Any, tmp_path: pathlib.Path) -> None:
    """Decided: no thread-pool fallback on other loops; a RuntimeError says why."""
    async def main() -> None:
        with pytest.raises(RuntimeError, match="needs a running uringloop event loop.*"
                           "SelectorEventLoop"):
            uringloop.open(tmp_path / "x", "wb")
        for coro_fn in (lambda: uringloop.stat(tmp_path), lambda: uringloop.unlink("x"),
                        lambda: uringloop.rename("x", "y"), lambda: uringloop.mkdir("x")):
            with pytest.raises(RuntimeError, match="uringloop event loop"):
                await coro_fn()
    stock_run(main())
    assert not (tmp_path / "x").exists()


def test_path_operations(run: Any, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"12345")
    os.symlink(src, tmp_path / "link")

    async def main() -> None:
        st = await uringloop.stat(src)
        ref = os.stat(src)
        assert tuple(st) == tuple(ref)
        for field in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks",
                      "st_rdev", "st_atime", "st_mtime", "st_ctime"):
            assert getattr(st, field) == getattr(ref, field), field
        assert await uringloop.stat(str(tmp_path / "link")) == os.stat(tmp_path / "link")
        assert await uringloop.stat(tmp_path / "link", follow_symlinks=False) == \
            os.stat(tmp_path / "link", follow_symlinks=False)
        assert await uringloop.stat(os.fsencode(tmp_path)) == os.stat(tmp_path)
        assert await uringloop.stat("/dev/null") == os.stat("/dev/null")
        fd = os.open(src, os.O_RDONLY)
        try:
            assert await uringloop.stat(fd) == os.stat(fd)
        finally:
            os.close(fd)
        await uringloop.mkdir(tmp_path / "d")
        await uringloop.mkdir(tmp_path / "d2", 0o700)
        assert os.stat(tmp_path / "d2").st_mode & 0o777 == 0o700 & ~_umask()
        await uringloop.rename(src, tmp_path / "d" / "moved")
        assert (tmp_path / "d" / "moved").read_bytes() == b"12345"
        await uringloop.rename(str(tmp_path / "d" / "moved"), os.fsencode(tmp_path / "back"))
        await uringloop.unlink(tmp_path / "back")
        assert sorted(os.listdir(tmp_path)) == ["d", "d2", "link"]
    run(main())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_path_operation_errors(run: Any, tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    missing = tmp_path / "missing"
    cases: list[tuple[Callable[[], Any], Callable[[], Any]]] = [
        (lambda: os.stat(missing), lambda: uringloop.stat(missing)),
        (lambda: os.stat(str(missing)), lambda: uringloop.stat(str(missing))),
        (lambda: os.stat(tmp_path / "f" / "x"), lambda: uringloop.stat(tmp_path / "f" / "x")),
        (lambda: os.stat(9999), lambda: uringloop.stat(9999)),
        (lambda: os.unlink(missing), lambda: uringloop.unlink(missing)),
        (lambda: os.unlink(tmp_path / "dir"), lambda: uringloop.unlink(tmp_path / "dir")),
        (lambda: os.mkdir(tmp_path / "dir"), lambda: uringloop.mkdir(tmp_path / "dir")),
        (lambda: os.mkdir(missing / "x"), lambda: uringloop.mkdir(missing / "x")),
        (lambda: os.rename(missing, tmp_path / "y"),
         lambda: uringloop.rename(missing, tmp_path / "y")),
        (lambda: os.rename(tmp_path / "dir", tmp_path / "f"),
         lambda: uringloop.rename(tmp_path / "dir", tmp_path / "f")),
    ]

    async def main() -> None:
        for oracle, ours in cases:
            theirs = _builtin_error(oracle)
            with pytest.raises(OSError) as info:
                await ours()
            _same(info.value, theirs)
    run(main())


def test_fallbacks_without_kernel_ops(run: Any, tmp_path: pathlib.Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every op the kernel might lack falls back to the synchronous os call."""
    from uringloop import _files
    monkeypatch.setattr(_files, "_has", lambda proactor, op: False)
    p = tmp_path / "f"

    async def main() -> None:
        async with uringloop.open(p, "w+b") as f:
            await f.write(b"hello world")
            await f.fsync()
            await f.truncate(5)
            await f.seek(0)
            assert await f.read() == b"hello"
            assert (await f.stat()).st_size == 5
        assert (await uringloop.stat(p)).st_size == 5
        assert (await uringloop.stat(os.fsencode(p))).st_size == 5
        await uringloop.mkdir(tmp_path / "d")
        await uringloop.rename(p, tmp_path / "d" / "g")
        await uringloop.unlink(tmp_path / "d" / "g")
        with pytest.raises(FileNotFoundError):
            await uringloop.open(p)
        assert os.listdir(tmp_path / "d") == []
    run(main())


def test_loop_closed_file_close(tmp_path: pathlib.Path) -> None:
    """A file still open when its loop closes can be closed (synchronously) later."""
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    loop = uringloop.new_event_loop()
    f = loop.run_until_complete(_opener(p))
    loop.close()
    with pytest.raises(RuntimeError, match="belongs to the uringloop loop it was opened on"):
        asyncio.run(f.read())
    assert f.fileno() >= 0 and f.readable() and f.tell() == 0   # plain methods work anywhere
    asyncio.run(f.close())    # the ring is gone: os.close
    assert f.closed


def test_file_used_from_another_loop(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as first:
        f = first.run(_opener(p))
        with asyncio.Runner(loop_factory=uringloop.new_event_loop) as second:
            with pytest.raises(RuntimeError, match="not running here"):
                second.run(f.read())
        assert first.run(f.read()) == b"abc"
        first.run(f.close())


async def _opener(p: pathlib.Path) -> Any:
    return await uringloop.open(p, "rb")
