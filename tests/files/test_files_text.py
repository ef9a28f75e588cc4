"""Text mode: decoding, newlines, errors, tell/seek, against the built-in ``open``."""

from __future__ import annotations

import builtins
import io
import pathlib
from typing import Any

import pytest

import uringloop

pytestmark = pytest.mark.timeout(60)

# Mixed line endings, multi-byte characters, a \r\n split across the 8 KiB
# decode chunk and a multi-byte character split across another.
BODY = ("héllo wörld\n" + "crlf line\r\n" + "cr line\r" + "€uro ∑ 𝄞 clef\n"
        + "a" * 8137 + "\r\n" + "b" * 8190 + "é" + "tail\n" * 50 + "\r\rlast without newline")
assert BODY.encode().index(b"\r\n", 100) == 8191   # \r\n split by the 8 KiB chunk
NEWLINES = [None, "", "\n", "\r", "\r\n"]


def _write_raw(path: pathlib.Path, text: str, encoding: str) -> None:
    path.write_bytes(text.encode(encoding, "surrogateescape" if encoding == "utf-8" else "strict"))


@pytest.mark.parametrize("newline", NEWLINES)
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-8-sig", "utf-16"])
def test_read_matches_builtin(run: Any, tmp_path: pathlib.Path, encoding: str,
                              newline: str | None) -> None:
    text = BODY if encoding != "latin-1" else BODY.encode("latin-1", "replace").decode("latin-1")
    p = tmp_path / "t.txt"
    _write_raw(p, text, encoding)
    plan = [5, 1, 100, 9000, 0, 3]

    with builtins.open(p, encoding=encoding, newline=newline) as g:
        exp_all = g.read()
        g.seek(0)
        exp_lines = list(g)
        g.seek(0)
        exp_sized = [g.readline(7) for _ in range(6)]
        g.seek(0)
        exp_parts = [g.read(n) for n in plan] + [g.readline(), g.read()]
        exp_newlines = g.newlines

    async def main() -> tuple[Any, ...]:
        async with uringloop.open(p, encoding=encoding, newline=newline) as f:
            got_all = await f.read()
            await f.seek(0)
            got_lines = [line async for line in f]
            await f.seek(0)
            got_sized = [await f.readline(7) for _ in range(6)]
            await f.seek(0)
            got_parts = [await f.read(n) for n in plan] + [await f.readline(), await f.read()]
            return got_all, got_lines, got_sized, got_parts, f.newlines

    got_all, got_lines, got_sized, got_parts, got_newlines = run(main())
    assert got_all == exp_all
    assert got_lines == exp_lines
    assert got_sized == exp_sized
    assert got_parts == exp_parts
    assert got_newlines == exp_newlines


@pytest.mark.parametrize("errors", ["strict", "replace", "ignore", "surrogateescape",
                                    "backslashreplace"])
def test_decode_errors_match_builtin(run: Any, tmp_path: pathlib.Path, errors: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(b"ok\n\xff\xfe bad \xc3\n" + b"x" * 9000 + b"\xe2\x82")

    def oracle() -> Any:
        try:
            with builtins.open(p, encoding="utf-8", errors=errors) as g:
                return g.read()
        except UnicodeDecodeError as exc:
            return type(exc)

    async def main() -> Any:
        try:
            async with uringloop.open(p, encoding="utf-8", errors=errors) as f:
                return await f.read()
        except UnicodeDecodeError as exc:
            return type(exc)
    assert run(main()) == oracle()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_write_matches_builtin(run: Any, tmp_path: pathlib.Path, encoding: str) -> None:
    """Every newline mode (one loop per encoding: keeps the run short)."""
    pieces = ["first\n", "second\r\n", "third\r", "€ uro\n" * 3, "", "end"]
    for i, newline in enumerate(NEWLINES):
        theirs = tmp_path / f"theirs{i}"
        with builtins.open(theirs, "w", encoding=encoding, newline=newline) as g:
            for s in pieces:
                g.write(s)
        with builtins.open(theirs, "a", encoding=encoding, newline=newline) as g:
            g.writelines(["appended\n", "more"])

    async def main() -> None:
        for i, newline in enumerate(NEWLINES):
            ours = tmp_path / f"ours{i}"
            async with uringloop.open(ours, "w", encoding=encoding, newline=newline) as f:
                for s in pieces:
                    assert await f.write(s) == len(s)
            async with uringloop.open(ours, "a", encoding=encoding, newline=newline) as f:
                await f.writelines(["appended\n", "more"])
    run(main())
    for i, newline in enumerate(NEWLINES):
        assert (tmp_path / f"ours{i}").read_bytes() == (tmp_path / f"theirs{i}").read_bytes(), \
            newline


def test_encode_errors(run: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with uringloop.open(tmp_path / "a", "w", encoding="ascii") as f:
            with pytest.raises(UnicodeEncodeError):
                await f.write("é")
            await f.write("fine")
        async with uringloop.open(tmp_path / "b", "w", encoding="ascii",
                                  errors="replace") as f:
            await f.write("é!")
        async with uringloop.open(tmp_path / "c", "w", encoding="utf-8") as f:
            with pytest.raises(TypeError):
                await f.write(b"bytes")
    run(main())
    assert (tmp_path / "a").read_bytes() == b"fine"
    assert (tmp_path / "b").read_bytes() == b"?!"


@pytest.mark.parametrize("newline", NEWLINES)
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-8-sig"])
def test_tell_seek_round_trip(run: Any, tmp_path: pathlib.Path, encoding: str,
                              newline: str | None) -> None:
    """Every tell() cookie seeks back to where the built-in says that line starts."""
    text = BODY if encoding != "latin-1" else BODY.encode("latin-1", "replace").decode("latin-1")
    p = tmp_path / "t.txt"
    _write_raw(p, text, encoding)
    with builtins.open(p, encoding=encoding, newline=newline) as g:
        exp = []
        while True:
            line = g.readline()
            exp.append(line)
            if not line:
                break

    async def main() -> list[tuple[int, str]]:
        marks = []
        async with uringloop.open(p, encoding=encoding, newline=newline) as f:
            while True:
                pos = f.tell()
                line = await f.readline()
                marks.append((pos, line))
                if not line:
                    break
            for pos, line in reversed(marks):
                assert await f.seek(pos) == pos
                assert await f.readline() == line
            await f.seek(0)
            assert await f.read(3) == exp[0][:3]
            cookie = f.tell()
            rest = await f.read()
            await f.seek(cookie)
            assert await f.read() == rest
            assert await f.seek(0, 2) > 0 and await f.read() == ""
            with pytest.raises(io.UnsupportedOperation):
                await f.seek(1, 1)
            with pytest.raises(io.UnsupportedOperation):
                await f.seek(-1, 2)
            with pytest.raises(ValueError):
                await f.seek(-1)
        return marks
    assert [line for _, line in run(main())] == exp


def test_text_read_write_plus(run: Any, tmp_path: pathlib.Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for p in (ours, theirs):
        p.write_text("alpha\nbeta\ngamma\n", encoding="utf-8")
    with builtins.open(theirs, "r+", encoding="utf-8") as g:
        # The built-in writes after a read at the *buffer's* position (the end of
        # its read-ahead); we write at the text position, as binary files do.
        # seek(tell()) makes the built-in do the same.
        exp = [g.readline(), g.seek(g.tell()) and g.write("BETA\n"), g.tell(), g.seek(0), g.read(),
               g.truncate(6), g.seek(0), g.read()]

    async def main() -> list[Any]:
        async with uringloop.open(ours, "r+", encoding="utf-8") as f:
            return [await f.readline(), await f.write("BETA\n"), f.tell(), await f.seek(0),
                    await f.read(), await f.truncate(6), await f.seek(0), await f.read()]
    assert run(main()) == exp
    assert ours.read_bytes() == theirs.read_bytes()


def test_line_buffering_and_attributes(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "lb"

    async def main() -> list[Any]:
        async with uringloop.open(p, "w", buffering=1, encoding="utf-8") as f:
            await f.write("no newline yet")
            a = p.read_bytes()
            await f.write(" now\n")
            b = p.read_bytes()
            attrs = [f.name == str(p), f.mode, f.encoding, f.errors, f.line_buffering,
                     f.writable(), f.readable(), f.seekable(), f.isatty(),
                     f.fileno() >= 0, "lb" in repr(f)]
            await f.flush()
            await f.fsync()
            assert (await f.stat()).st_size == len(b)
        assert f.closed and "closed" in repr(f)
        return [a, b] + attrs
    assert run(main()) == [b"", b"no newline yet now\n", True, "w", "utf-8", "strict", True,
                           True, False, True, False, True, True]


def test_text_unsupported(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "x"
    p.write_text("abc", encoding="utf-8")

    async def main() -> None:
        async with uringloop.open(p, "a", encoding="utf-8") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.read()
            with pytest.raises(io.UnsupportedOperation):
                await f.readline()
        async with uringloop.open(p, encoding="utf-8") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write("x")
            assert await f.readlines() == ["abc"]
            assert await f.readline() == ""
    run(main())


def test_default_encoding_is_the_builtins(run: Any, tmp_path: pathlib.Path) -> None:
    p = tmp_path / "enc"
    p.write_bytes("é\n".encode())
    with builtins.open(p, encoding=io.text_encoding(None)) as g:   # as a bare open(p)
        exp = (g.encoding, g.read())

    async def main() -> tuple[str, str]:
        async with uringloop.open(p, encoding=io.text_encoding(None)) as f:
            return f.encoding, await f.read()
    enc, data = run(main())
    assert data == exp[1]


def test_tell_refuses_a_position_it_cannot_name(run: Any, tmp_path: pathlib.Path) -> None:
    """UTF-16 with a big-endian BOM on a little-endian machine: the byte order is
    decoder state a plain offset cannot carry; tell() raises, never lies.  (The
    native byte order is the decoder's state 0: there tell/seek work.)"""
    be, native = tmp_path / "be", tmp_path / "native"
    be.write_bytes(b"\xfe\xff" + "one\ntwo\n".encode("utf-16-be"))
    native.write_text("one\ntwo\n", encoding="utf-16")

    async def main() -> None:
        async with uringloop.open(be, encoding="utf-16") as f:
            assert f.tell() == 0
            assert await f.readline() == "one\n"
            with pytest.raises(OSError):
                f.tell()
            assert await f.read() == "two\n"
            assert await f.seek(0) == 0 and await f.readline() == "one\n"
        async with uringloop.open(native, encoding="utf-16") as f:
            assert await f.readline() == "one\n"
            cookie = f.tell()
            assert await f.readline() == "two\n"
            await f.seek(cookie)
            assert await f.read() == "two\n"
    run(main())
