"""Helpers shared by the reliability tests (imported as a plain module)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import resource
from typing import Any

import uringloop


def open_fds() -> set[int]:
    """Open fds, without the listing's own (closed by the time we look)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            fcntl.fcntl(int(name), fcntl.F_GETFD)
        except OSError:
            continue
        fds.add(int(name))
    return fds


def fd_count() -> int:
    return len(open_fds())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to at least needed; return the old limits."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            import pytest
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return old


def assert_quiet(loop: asyncio.AbstractEventLoop) -> None:
    """The accounting every fault test ends with (loop still open)."""
    if isinstance(loop, uringloop.Loop):
        st = loop.statistics()
        # the self-pipe read is the one op a quiet loop always has
        assert st.ops_in_flight == 1, st
        assert st.buffers_lent == 0, st


def pattern(seed: int, n: int) -> bytes:
    """n deterministic bytes that differ per seed and per position."""
    block = bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(256))
    reps, rest = divmod(n, 256)
    return block * reps + block[:rest]


async def quiesce(loop: Any, rounds: int = 5) -> None:
    """A few iterations; on uringloop, on until the cancellations that closing
    submitted have completed (the self-pipe read left).  Under DEFER_TASKRUN
    the kernel runs a bounded batch of task work per enter (about 20 items on
    Linux 6.x), so closing a thousand transports takes dozens of iterations.
    Bounded: assert_quiet() then fails if ops are still in flight."""
    for _ in range(rounds):
        await asyncio.sleep(0)
    if isinstance(loop, uringloop.Loop):
        for _ in range(2000):
            if loop.statistics().ops_in_flight <= 1:
                break
            await asyncio.sleep(0)
