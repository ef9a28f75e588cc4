"""File I/O: uringloop.open (ring operations) vs aiofiles (thread pool) vs blocking.

    python -m benchmarks.files            # 7 rounds per cell
    python -m benchmarks.files --quick    # 3 rounds, smaller sizes
    python -m benchmarks.files --json out.json --verify-only

Cells (every result is checked against the data written):

* ``pread 4KiB x1000 concurrent``: 1000 tasks each read 4 KiB at a random
  offset of one 64 MiB file, all at once.  uringloop: ``f.pread``; thread pool:
  ``asyncio.to_thread(os.pread, ...)`` (aiofiles has no pread, and its file
  objects cannot be shared by concurrent readers); blocking: ``os.pread`` in a loop.
* ``read 4KiB x1000 sequential``: one task reads a file 4 KiB at a time
  (``f.read(4096)`` 1000 times; buffering=0 for uringloop and builtins so each
  read is one system call / ring operation, aiofiles' default buffered file).
* ``read 64MiB whole``: ``await f.read()`` of a 64 MiB file (page cache warm).
* ``small files x500``: 500 tasks each open, read (4 KiB) and close its own file.

Implementations: ``uringloop`` (uringloop.open on a uringloop loop),
``aiofiles/asyncio`` and ``aiofiles/uringloop`` (aiofiles' thread pool on either
loop), ``blocking`` (built-in open in the loop thread: the floor, but it blocks
the loop).  Each round times one batch; rounds of the implementations are
interleaved, so machine noise hits them alike.  The table shows the median of
the rounds and each time relative to uringloop's (>1: slower than uringloop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMPLS = ("uringloop", "aiofiles/asyncio", "aiofiles/uringloop", "blocking")


class Fixture:
    def __init__(self, root: Path, big_mib: int, n_small: int) -> None:
        self.root = root
        self.big = root / "big"
        rnd = random.Random(1)
        block = rnd.randbytes(1 << 20)
        self.big_data = b"".join(bytes([i % 256]) + block[1:] for i in range(big_mib))
        self.big.write_bytes(self.big_data)
        self.seq = root / "seq"
        self.seq_data = self.big_data[:1000 * 4096]
        self.seq.write_bytes(self.seq_data)
        self.offsets = [rnd.randrange(0, len(self.big_data) - 4096) for _ in range(1000)]
        self.small = []
        for i in range(n_small):
            p = root / f"small{i}"
            p.write_bytes(bytes([i % 256]) * 4096)
            self.small.append(p)
        # Warm the page cache.
        for p in [self.big, self.seq, *self.small]:
            p.read_bytes()


# -- uringloop ----------------------------------------------------------------------

async def u_pread(fx: Fixture) -> list[bytes]:
    import uringloop
    async with uringloop.open(fx.big, "rb") as f:
        return list(await asyncio.gather(*(f.pread(4096, off) for off in fx.offsets)))


async def u_seq(fx: Fixture) -> bytes:
    import uringloop
    out = []
    async with uringloop.open(fx.seq, "rb", buffering=0) as f:
        for _ in range(1000):
            out.append(await f.read(4096))
    return b"".join(out)


async def u_whole(fx: Fixture) -> bytes:
    import uringloop
    async with uringloop.open(fx.big, "rb") as f:
        return await f.read()   # type: ignore[no-any-return]


async def u_small(fx: Fixture) -> list[bytes]:
    import uringloop

    async def one(p: Path) -> bytes:
        async with uringloop.open(p, "rb") as f:
            return await f.read()   # type: ignore[no-any-return]
    return list(await asyncio.gather(*(one(p) for p in fx.small)))


# -- aiofiles (thread pool) ---------------------------------------------------------

async def a_pread(fx: Fixture) -> list[bytes]:
    fd = os.open(fx.big, os.O_RDONLY)
    try:
        return list(await asyncio.gather(*(asyncio.to_thread(os.pread, fd, 4096, off)
                                           for off in fx.offsets)))
    finally:
        os.close(fd)


async def a_seq(fx: Fixture) -> bytes:
    import aiofiles
    out = []
    async with aiofiles.open(fx.seq, "rb") as f:
        for _ in range(1000):
            out.append(await f.read(4096))
    return b"".join(out)


async def a_whole(fx: Fixture) -> bytes:
    import aiofiles
    async with aiofiles.open(fx.big, "rb") as f:
        return await f.read()   # type: ignore[no-any-return]


async def a_small(fx: Fixture) -> list[bytes]:
    import aiofiles

    async def one(p: Path) -> bytes:
        async with aiofiles.open(p, "rb") as f:
            return await f.read()   # type: ignore[no-any-return]
    return list(await asyncio.gather(*(one(p) for p in fx.small)))


# -- blocking --------------------------------------------------------------------------

async def b_pread(fx: Fixture) -> list[bytes]:
    fd = os.open(fx.big, os.O_RDONLY)
    try:
        return [os.pread(fd, 4096, off) for off in fx.offsets]
    finally:
        os.close(fd)


async def b_seq(fx: Fixture) -> bytes:
    out = []
    with open(fx.seq, "rb", buffering=0) as f:
        for _ in range(1000):
            out.append(f.read(4096))
    return b"".join(out)


async def b_whole(fx: Fixture) -> bytes:
    with open(fx.big, "rb") as f:
        return f.read()


async def b_small(fx: Fixture) -> list[bytes]:
    out = []
    for p in fx.small:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


CELLS: dict[str, dict[str, Callable[[Fixture], Any]]] = {
    "pread 4KiB x1000 concurrent": {"uringloop": u_pread, "aiofiles": a_pread,
                                    "blocking": b_pread},
    "read 4KiB x1000 sequential": {"uringloop": u_seq, "aiofiles": a_seq, "blocking": b_seq},
    "read 64MiB whole": {"uringloop": u_whole, "aiofiles": a_whole, "blocking": b_whole},
    "small files x500": {"uringloop": u_small, "aiofiles": a_small, "blocking": b_small},
}


def expected(cell: str, fx: Fixture) -> Any:
    if cell.startswith("pread"):
        return [fx.big_data[o:o + 4096] for o in fx.offsets]
    if cell.startswith("read 4KiB"):
        return fx.seq_data
    if cell.startswith("read 64MiB"):
        return fx.big_data
    return [p.read_bytes() for p in fx.small]


async def _warm_executor() -> None:
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.001) for _ in range(32)))


def loop_for(impl: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if impl in ("uringloop", "aiofiles/uringloop"):
        import uringloop
        return uringloop.new_event_loop
    return asyncio.new_event_loop


def run_cell(cell: str, fx: Fixture, rounds: int) -> dict[str, Any]:
    """Every implementation of one cell, rounds interleaved (impl A, B, C, D,
    A, B, ...) so that noise from the rest of the machine hits them alike."""
    want = expected(cell, fx)
    runners: dict[str, asyncio.Runner] = {}
    out: dict[str, Any] = {}
    try:
        for impl in IMPLS:
            try:
                if impl.startswith("aiofiles"):
                    import aiofiles  # noqa: F401
                runner = asyncio.Runner(loop_factory=loop_for(impl))
                runner.__enter__()
            except ImportError as exc:
                out[impl] = {"error": f"{exc.name} not installed"}
                continue
            runners[impl] = runner
            if impl.startswith("aiofiles"):
                # The default executor's threads exist before timing starts.
                runner.run(_warm_executor())
            if runner.run(CELLS[cell][impl.split("/")[0]](fx)) != want:   # warm-up, checked
                raise AssertionError(f"{cell} / {impl}: wrong data")
            out[impl] = {"rounds": []}
        for _ in range(rounds):
            for impl, runner in runners.items():
                fn = CELLS[cell][impl.split("/")[0]]
                t0 = time.perf_counter()
                got = runner.run(fn(fx))
                out[impl]["rounds"].append(time.perf_counter() - t0)
                if got != want:
                    raise AssertionError(f"{cell} / {impl}: wrong data")
    finally:
        for runner in runners.values():
            runner.close()
    for r in out.values():
        if "rounds" in r:
            r["median"] = statistics.median(r["rounds"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, a 16 MiB big file")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--verify-only", action="store_true", help="one checked round, no table")
    ap.add_argument("--json", type=Path, default=None, help="write every round here")
    ap.add_argument("--cells", default="", help="comma-separated substrings of cell names")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    big_mib = 16 if args.quick else 64
    if args.verify_only:
        rounds, big_mib = 1, 4
    wanted = [c for c in CELLS if not args.cells or any(s in c for s in args.cells.split(","))]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="uringloop-files-") as tmp:
        fx = Fixture(Path(tmp), big_mib, 500)
        for cell in wanted:
            label = cell.replace("64MiB", f"{big_mib}MiB")
            results[label] = run_cell(cell, fx, rounds)
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rounds": rounds,
                                         "results": results}, indent=2))
    if args.verify_only:
        print("ok: every cell's data checked")
        return 0
    print(f"Python {sys.version.split()[0]}, {rounds} rounds, median ms "
          f"(x = time / uringloop time; >1 means slower than uringloop)\n")
    head = f"{'cell':34}" + "".join(f"{impl:>24}" for impl in IMPLS)
    print(head)
    print("-" * len(head))
    for label, row in results.items():
        base = row.get("uringloop", {}).get("median")
        cells = []
        for impl in IMPLS:
            r = row.get(impl, {})
            if "median" not in r:
                cells.append(f"{r.get('error', 'n/a'):>24}")
                continue
            ms = r["median"] * 1e3
            ratio = f" ({r['median'] / base:.2f}x)" if base else ""
            cells.append(f"{ms:>14.2f}{ratio:>10}")
        print(f"{label:34}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
