"""Zero-copy paths, side by side in one run: SEND_ZC vs copying sends, ring splice vs os.sendfile.

    python -m benchmarks.zerocopy [--quick] [--rounds N] [--json out.json]

A sink process (plain blocking sockets, another process so the receiver does
not share the loop) accepts TCP connections on loopback, reads each to EOF
and answers with the byte count.  The sender is one uringloop loop in this
process.  For each case the variants run alternately, round after round (A B
C, A B C, ...), each round on a fresh connection; reported: the median MB/s
(wall) and the median sender CPU time per MiB (getrusage of this process,
user+system: the kernel's copy is charged to the sender's system time), and
each variant's ratio to the first one.

Write cases (``transport.write`` of one payload size, repeated, with drain):
``copy`` (IORING_OP_SEND, as default), ``zc`` (SEND_ZC, straight to the
ring), ``zc+send`` (SEND_ZC after a first plain ``send()`` attempt).  The
ZC notification counters say whether the kernel copied anyway (loopback
always does).

sendfile cases (``loop.sendfile(transport, file)``): ``splice`` (ring splices
file -> pipe -> socket) vs ``os.sendfile`` (stock's path driven by ring
polls), on a page-cache-warm file, then on a cold one (its pages evicted with
POSIX_FADV_DONTNEED before each round).  ``max_stall_ms``: the longest delay
of a task sleeping 1 ms at a time during the transfer, i.e. how long the
loop was blocked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import uringloop
from uringloop import _splice, _stream

MiB = 1024 * 1024
SINK = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(16)
print(srv.getsockname()[1], flush=True)
def serve(c):
    buf = bytearray(4 * 1024 * 1024); total = 0
    while True:
        n = c.recv_into(buf)
        if not n: break
        total += n
    c.sendall(str(total).encode()); c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.reply = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self._drain: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reply += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(int(self.reply or b"-1"))
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self.paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _write_round(port: int, size: int, total: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    payload = os.urandom(size)
    tr, pr = await loop.create_connection(_Client, "127.0.0.1", port)
    tr.set_write_buffer_limits(high=4 * size)
    n = total // size
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(n):
        tr.write(payload)
        await pr.drain()
    tr.write_eof()
    got = await pr.done
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if got != n * size:
        raise RuntimeError(f"sink got {got} bytes, sent {n * size}")
    tr.close()
    return n * size / wall / 1e6, cpu / (n * size / MiB) * 1e6


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    """Sleeps 1 ms at a time and records how late each wake-up is: loop stalls."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        gaps.append(time.perf_counter() - t - 0.001)


async def _sendfile_round(port: int, path: str, cold: bool = False, repeat: int = 1
                          ) -> tuple[float, float, float]:
    loop = asyncio.get_running_loop()
    tr, pr = await loop.create_connection(_Client, "127.0.0.1", port)
    fsize = os.path.getsize(path)
    size = fsize * repeat
    with open(path, "rb") as f:
        if cold:   # evict the file's pages: every read is a page-cache miss
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        gaps: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.ensure_future(_ticker(gaps, stop))
        await asyncio.sleep(0)
        t0, c0 = time.perf_counter(), _cpu()
        sent = 0
        for _ in range(repeat):
            sent += await loop.sendfile(tr, f, 0)
        tr.write_eof()
        got = await pr.done
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        stop.set()
        await ticker
    if sent != size or got != size:
        raise RuntimeError(f"sendfile sent {sent}, sink got {got}, file {size}")
    tr.close()
    return size / wall / 1e6, cpu / (size / MiB) * 1e6, max(gaps, default=0.0) * 1e3


WRITE_VARIANTS = {
    # name: (ZC_THRESHOLD, ZC_TRY_SEND_FIRST)
    "copy": (0, False),
    "zc": (1, False),
    "zc+send": (1, True),
}
SENDFILE_VARIANTS = {"splice": (1, True), "splice-ring2": (1, False), "os.sendfile": (0, True)}


def _summary(samples: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = None
    for name, rows in samples.items():
        mbs = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        if base is None:
            base = (mbs, cpu)
        out[name] = {"MB/s": round(mbs, 1), "cpu_us_per_MiB": round(cpu, 1),
                     "speed_ratio": round(mbs / base[0], 3),
                     "cpu_ratio": round(cpu / base[1], 3), "rounds": len(rows)}
        if len(rows[0]) > 2:   # sendfile: the longest loop stall seen by a 1 ms ticker
            out[name]["max_stall_ms"] = round(statistics.median(r[2] for r in rows), 2)
    return out


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        results: dict[str, Any] = {"write": {}, "sendfile": {}}
        sizes = [64 * 1024, 256 * 1024, MiB, 4 * MiB]
        total = (16 if args.quick else 64) * MiB
        saved = (_stream.ZC_THRESHOLD, _stream.ZC_TRY_SEND_FIRST, _splice.SPLICE_THRESHOLD,
                 _splice.SPLICE_OUT_INLINE)
        try:
            for size in sizes:
                samples: dict[str, list[tuple[float, float]]] = {k: [] for k in WRITE_VARIANTS}
                stats0 = dict(_stream.zc_stats)
                for _ in range(args.rounds):
                    for name, (thr, first) in WRITE_VARIANTS.items():
                        _stream.ZC_THRESHOLD, _stream.ZC_TRY_SEND_FIRST = thr, first
                        samples[name].append(await _write_round(port, size, total))
                row = _summary(samples)
                row["zc_notifications"] = _stream.zc_stats["notifications"] - stats0["notifications"]
                row["zc_copied"] = _stream.zc_stats["copied"] - stats0["copied"]
                results["write"][f"{size // 1024} KiB"] = row
                print(f"write {size // 1024:>5} KiB: {json.dumps(row)}", flush=True)
            big = (16 if args.quick else 64) * MiB
            cases = [(256 * 1024, False), (4 * MiB, False), (big, False), (big, True)]
            for fsize, cold in cases:
                with tempfile.NamedTemporaryFile(dir=args.tmpdir) as f:
                    f.write(os.urandom(fsize))
                    f.flush()
                    os.fsync(f.fileno())
                    with open(f.name, "rb") as warm:   # page-cache warm
                        while warm.read(MiB):
                            pass
                    repeat = max(1, big // fsize // 4)   # a round moves >= big/4
                    samples = {k: [] for k in SENDFILE_VARIANTS}
                    for _ in range(args.rounds):
                        for name, (thr, inline) in SENDFILE_VARIANTS.items():
                            _splice.SPLICE_THRESHOLD = thr
                            _splice.SPLICE_OUT_INLINE = inline
                            samples[name].append(
                                await _sendfile_round(port, f.name, cold, repeat))
                    row = _summary(samples)
                    label = f"{fsize // MiB} MiB" if fsize >= MiB else f"{fsize // 1024} KiB"
                    key = f"{label} {'cold' if cold else 'warm'} x{repeat}"
                    results["sendfile"][key] = row
                    print(f"sendfile {key}: {json.dumps(row)}", flush=True)
        finally:
            (_stream.ZC_THRESHOLD, _stream.ZC_TRY_SEND_FIRST, _splice.SPLICE_THRESHOLD,
             _splice.SPLICE_OUT_INLINE) = saved
        return results
    finally:
        sink.kill()
        sink.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB per round, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--tmpdir", default=None, help="where the sendfile test file lives")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
        loop = runner.get_loop()
        if not loop.features.send_zc:   # type: ignore[attr-defined]
            print("note: this kernel/ring has no SEND_ZC; 'zc' rows are plain sends")
        results = runner.run(_main(args))
    results["kernel"] = os.uname().release
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
