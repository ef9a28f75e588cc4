"""The C core, driven directly through cffi (``uringloop._ring``: Ring, lib, ffi).

These tests pin the contract of ``_build/csrc/ul_ring.h``: what each entry point
returns, that no submission and no completion is ever dropped or duplicated
(full SQ, overflowing CQ, a reap array smaller than the backlog), how kernel
errors come back, provided-buffer rings, cancellation, registered ring fds and
threads, and what a ring refuses after ``ul_ring_fork_reset``.

Behaviour that depends on how the ring was set up is parametrized over the
setup-flag variants (the id names the variant).  A variant or feature the
running kernel does not offer skips with the reason.  No test measures time:
where a bug would show as a missing wake-up, the test waits forever and the
``timeout`` marker turns the hang into a failure.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import socket
import threading
import warnings
from typing import Any, Iterator

import pytest

from uringloop import _proactor, _ring
from uringloop._ring import Ring, ffi, lib

pytestmark = pytest.mark.timeout(60)

F_BUFFER = _ring.CQE_F_BUFFER
F_MORE = _ring.CQE_F_MORE
OFF_CURRENT = 2**64 - 1          # read/write at the file position (pipes, eventfds)
OP_MSG_RING = 40
ASYNC_CANCEL_ANY = 1 << 2
UD_SENTINEL = 2**63 + 1

# variant id -> (features switched off, setup flags the ring must end up with)
# The setup-flag ladder, from the best rung down: each variant switches off
# the rungs above it.
VARIANTS = {
    "defer_taskrun": (frozenset(), {"SINGLE_ISSUER", "DEFER_TASKRUN", "SUBMIT_ALL"}),
    "coop_taskrun": (frozenset({"defer_taskrun"}),
                     {"COOP_TASKRUN", "TASKRUN_FLAG", "SUBMIT_ALL"}),
    "submit_all": (frozenset({"defer_taskrun", "coop_taskrun"}), {"SUBMIT_ALL"}),
    "bare": (frozenset({"defer_taskrun", "coop_taskrun", "submit_all"}), set()),
}

try:
    Ring().close()
except _ring.UringUnavailableError as exc:  # pragma: no cover - depends on host
    pytest.skip(f"io_uring unavailable: {exc}", allow_module_level=True)


# ---- helpers ----------------------------------------------------------------


def cqes_of(ptr: Any, n: int) -> list[tuple[int, int, int]]:
    out = lib.ul_ring_cqes(ptr)
    return [(out[i].user_data, out[i].res, out[i].flags) for i in range(n)]


def run(ring: Ring, timeout_ns: int = -1, must_enter: int = 1) -> list[tuple[int, int, int]]:
    """One ul_run; the CQEs it harvested as (user_data, res, flags)."""
    n = lib.ul_run(ring.ptr, timeout_ns, must_enter)
    assert n >= 0, f"ul_run failed: {os.strerror(-n)}"
    return cqes_of(ring.ptr, n)


def wait_for(ring: Ring, uds: set[int], seen: list[tuple[int, int, int]] | None = None
             ) -> dict[int, tuple[int, int]]:
    """Wait (forever, the timeout marker bounds it) until each ud in uds has a
    CQE; returns ud -> (res, flags) of the last CQE seen for it."""
    seen = [] if seen is None else seen
    got: dict[int, tuple[int, int]] = {}
    while not uds <= got.keys():
        for ud, res, flags in run(ring, -1):
            seen.append((ud, res, flags))
            got[ud] = (res, flags)
    return got


def drain_nops(ring: Ring, count: int) -> collections.Counter[int]:
    """Reap until count CQEs were seen; the multiset of their user_data."""
    seen: collections.Counter[int] = collections.Counter()
    while sum(seen.values()) < count:
        for ud, res, _flags in run(ring, -1):
            assert res == 0, (ud, res)
            seen[ud] += 1
    return seen


def stats(ptr: Any) -> Any:
    st = ffi.new("ul_stats *")
    lib.ul_ring_stats(ptr, st)
    return st


def quiesce(ring: Ring) -> None:
    """Cancel whatever a test left in flight and reap until the kernel is done."""
    if ring.closed or ring.forked:
        return
    while lib.ul_prep_cancel(ring.ptr, 0, -1, ASYNC_CANCEL_ANY, UD_SENTINEL) == -errno.EBUSY:
        run(ring, 0)
    while True:
        cqes = run(ring, -1)
        if any(ud == UD_SENTINEL for ud, _res, _flags in cqes):
            break


@pytest.fixture
def rings() -> Iterator[list[Ring]]:
    """Rings a test makes; each is quiesced and closed afterwards."""
    made: list[Ring] = []
    yield made
    for ring in made:
        if ring.owner_thread == threading.get_ident():   # only its owner may submit
            quiesce(ring)
        ring.close()


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_ring(rings: list[Ring], variant: str = "defer_taskrun", **kw: Any) -> Ring:
    """A Ring of the given setup variant, claimed by this thread."""
    disable, expected = VARIANTS[variant]
    ring = Ring(disable=disable, **kw)
    rings.append(ring)
    got = set(ring.features.setup_flags)
    if got != expected:
        pytest.skip(f"setup variant {variant!r} unavailable here: kernel gave {sorted(got)}, "
                    f"wanted {sorted(expected)}")
    ring.claim_thread()
    return ring


class RawRing:
    """A ring from ul_ring_create itself (any flags, any reap capacity)."""

    def __init__(self, sq: int, cq: int, flags: int = 0, reap: int = 64) -> None:
        out = ffi.new("ul_ring **")
        self.info = ffi.new("ul_info *")
        ret = lib.ul_ring_create(out, sq, cq, flags, reap, self.info)
        if ret == -errno.EINVAL and flags:
            pytest.skip(f"kernel refuses setup flags {flags:#x}")
        assert ret == 0, os.strerror(-ret)
        self.ptr = out[0]
        self.fd = self.info.ring_fd

    def close(self) -> None:
        if self.ptr != ffi.NULL:
            lib.ul_ring_destroy(self.ptr)
            self.ptr = ffi.NULL


@pytest.fixture
def raw_rings() -> Iterator[list[RawRing]]:
    made: list[RawRing] = []
    yield made
    for r in made:
        r.close()


def raw_run(r: RawRing, timeout_ns: int = -1) -> list[tuple[int, int, int]]:
    n = lib.ul_run(r.ptr, timeout_ns, 1)
    assert n >= 0, os.strerror(-n)
    return cqes_of(r.ptr, n)


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def closed_fd() -> int:
    """An fd number that is certainly not open."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


# ---- setup, features, probe -----------------------------------------------------


def flag_names(flags: int) -> frozenset[str]:
    return frozenset(n for bit, n in _ring.SETUP_FLAG_NAMES.items() if flags & bit)


def names_to_flags(names: set[str]) -> int:
    by_name = {n: bit for bit, n in _ring.SETUP_FLAG_NAMES.items()}
    return sum(by_name[n] for n in names)


def test_setup_ladder_features_match_ul_info(variant: str) -> None:
    disable, expected = VARIANTS[variant]
    # This variant's rung, asked of the kernel directly (SINGLE_ISSUER rings
    # are created disabled, to be enabled by the thread that runs them).
    flags = names_to_flags(expected)
    if "SINGLE_ISSUER" in expected:
        flags |= lib.UL_SETUP_R_DISABLED
    out = ffi.new("ul_ring **")
    info = ffi.new("ul_info *")
    ret = lib.ul_ring_create(out, 8, 32, flags, 16, info)
    if ret == -errno.EINVAL:
        pytest.skip(f"kernel refuses the {variant!r} rung {sorted(expected)}")
    assert ret == 0, os.strerror(-ret)
    lib.ul_ring_destroy(out[0])
    # What ul_info reports is what the kernel granted: the requested flags
    # plus CQSIZE (we asked for a CQ size), sizes rounded to powers of two.
    assert info.setup_flags == flags | (1 << 3)
    assert (info.sq_entries, info.cq_entries) == (8, 32)
    assert info.registered_fd == -1 and info.ring_fd >= 0

    ring = Ring(sq_entries=8, cq_entries=32, disable=disable)
    try:
        feats = ring.features
        assert feats.setup_flags == flag_names(info.setup_flags) - {"R_DISABLED"}
        assert feats.kernel_features == frozenset(
            n for bit, n in _ring.FEATURE_NAMES.items() if info.features & bit)
        assert (feats.sq_entries, feats.cq_entries) == (8, 32)
        assert feats.defer_taskrun == ("DEFER_TASKRUN" in expected)
        assert feats.coop_taskrun == ("COOP_TASKRUN" in expected)
        assert feats.submit_all == ("SUBMIT_ALL" in expected)
        assert feats.disabled == disable
        assert {"NODROP", "EXT_ARG"} <= feats.kernel_features
    finally:
        ring.close()


def test_sizes_are_rounded_and_cq_defaults_to_twice_sq(raw_rings: list[RawRing]) -> None:
    r = RawRing(5, 9)
    raw_rings.append(r)
    assert (r.info.sq_entries, r.info.cq_entries) == (8, 16)
    r0 = RawRing(4, 0)          # no CQSIZE: the kernel's default
    raw_rings.append(r0)
    assert (r0.info.sq_entries, r0.info.cq_entries) == (4, 8)
    assert not r0.info.setup_flags & (1 << 3)


@pytest.mark.parametrize("sq, cq, reap", [(0, 8, 8), (8, 8, 0), (8, 4, 8)],
                         ids=["zero-sq", "zero-reap", "cq-smaller-than-sq"])
def test_create_rejects_bad_sizes(sq: int, cq: int, reap: int) -> None:
    out = ffi.new("ul_ring **")
    out[0] = ffi.cast("ul_ring *", 1)
    assert lib.ul_ring_create(out, sq, cq, 0, reap, ffi.NULL) == -errno.EINVAL
    assert out[0] == ffi.NULL


def test_probe_reports_core_ops(rings: list[Ring]) -> None:
    ring = new_ring(rings, "submit_all")
    supported = ffi.new("uint8_t[]", 256)
    last = lib.ul_probe(ring.ptr, supported, 256)
    assert last >= _ring.OP_RECV, os.strerror(-last) if last < 0 else last
    core = {"nop", "read", "write", "recv", "send", "accept", "poll_add", "async_cancel"}
    missing = core - ring.features.ops
    assert not missing, f"kernel lacks core ops {sorted(missing)}"
    # Features.ops is exactly what the probe said, for every opcode we name.
    assert ring.features.ops == {
        name for code, name in _ring.OPCODE_NAMES.items() if supported[code]}
    assert not any(supported[i] for i in range(last + 1, 256))
    # A short output array is filled only as far as it goes.
    few = ffi.new("uint8_t[]", [7] * 4)
    assert lib.ul_probe(ring.ptr, few, 3) == last
    assert list(few) == [1, 1, 1, 7]


def test_opcode_beyond_probe_fails_with_einval(rings: list[Ring]) -> None:
    ring = new_ring(rings, "submit_all")
    supported = ffi.new("uint8_t[]", 256)
    last = lib.ul_probe(ring.ptr, supported, 256)
    assert 0 < last < 255
    assert lib.ul_prep_rw(ring.ptr, last + 1, -1, ffi.NULL, 0, 0, 0, 5) == 0
    assert wait_for(ring, {5})[5][0] == -errno.EINVAL


def test_ring_fd_is_close_on_exec(rings: list[Ring]) -> None:
    ring = new_ring(rings, "submit_all")
    assert fcntl.fcntl(ring.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


# ---- submission queue ------------------------------------------------------------


def test_full_sq_flushes_and_drops_nothing(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant, sq_entries=4, cq_entries=256)
    n = 103
    for ud in range(1, n + 1):
        assert lib.ul_prep_nop(ring.ptr, ud) == 0
        assert stats(ring.ptr).sq_pending <= 4
    st = stats(ring.ptr)
    # Every fifth NOP found the 4-entry SQ full and flushed it first.
    assert st.sq_full_flushes == (n - 1) // 4
    assert st.sqes_submitted == 4 * st.sq_full_flushes
    assert st.sq_pending == n - st.sqes_submitted
    seen = drain_nops(ring, n)
    assert seen == collections.Counter(range(1, n + 1))
    st = stats(ring.ptr)
    assert (st.sqes_submitted, st.cqes_reaped, st.sq_pending) == (n, n, 0)
    assert run(ring, 0) == []


def test_submit_returns_count_and_reap_harvests_without_entering(
        variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant, sq_entries=8, cq_entries=16)
    enters = stats(ring.ptr).enters
    assert lib.ul_submit(ring.ptr) == 0          # nothing pending: no syscall
    assert stats(ring.ptr).enters == enters
    for ud in (11, 12, 13):
        assert lib.ul_prep_nop(ring.ptr, ud) == 0
    assert lib.ul_submit(ring.ptr) == 3
    enters += 1
    assert stats(ring.ptr).enters == enters
    # NOPs complete inline during submission: their CQEs are already posted.
    n = lib.ul_reap(ring.ptr)
    assert sorted(cqes_of(ring.ptr, n)) == [(11, 0, 0), (12, 0, 0), (13, 0, 0)]
    assert lib.ul_reap(ring.ptr) == 0
    assert stats(ring.ptr).enters == enters


def test_unflushable_full_sq_keeps_prepared_sqes(raw_rings: list[RawRing]) -> None:
    # A disabled ring refuses submission: a prep that finds the SQ full gets
    # the kernel's error, and the four SQEs already prepared are neither
    # overwritten nor lost; they all complete once the ring is enabled.
    r = RawRing(4, 16, lib.UL_SETUP_R_DISABLED)
    raw_rings.append(r)
    for ud in range(1, 5):
        assert lib.ul_prep_nop(r.ptr, ud) == 0
    assert lib.ul_prep_nop(r.ptr, 99) == -errno.EBADFD
    assert lib.ul_run(r.ptr, 0, 1) == -errno.EBADFD
    st = stats(r.ptr)
    assert (st.sq_pending, st.sqes_submitted) == (4, 0)
    assert lib.ul_ring_enable(r.ptr) == 0
    assert lib.ul_ring_enable(r.ptr) == 0         # idempotent
    got: collections.Counter[int] = collections.Counter()
    while sum(got.values()) < 4:
        got.update(ud for ud, res, _ in raw_run(r) if res == 0)
    assert got == collections.Counter({1: 1, 2: 1, 3: 1, 4: 1})
    assert raw_run(r, 0) == []


# ---- completion queue ---------------------------------------------------------------


def test_cq_overflow_reaps_every_completion_once(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant, sq_entries=4, cq_entries=4)
    assert "NODROP" in ring.features.kernel_features
    n = 150
    for ud in range(1, n + 1):
        assert lib.ul_prep_nop(ring.ptr, ud) == 0
    assert lib.ul_submit(ring.ptr) >= 0
    # 150 completions, a 4-entry CQ: the kernel parked the rest on its overflow
    # list.  An infinite wait must not sleep while any are parked.
    seen = drain_nops(ring, n)
    assert seen == collections.Counter(range(1, n + 1))
    st = stats(ring.ptr)
    assert st.cqes_reaped == n and st.sqes_submitted == n
    assert st.cq_overflow_flushes >= 1
    assert st.cq_overflow_kernel == 0          # nothing was dropped
    assert run(ring, 0) == []


@pytest.mark.parametrize("flags", [0, "defer"], ids=["plain", "defer_taskrun"])
def test_reap_capacity_boundary(flags: Any, raw_rings: list[RawRing]) -> None:
    if flags == "defer":
        flags = lib.UL_SETUP_SINGLE_ISSUER | lib.UL_SETUP_DEFER_TASKRUN
    r = RawRing(32, 256, flags, reap=7)
    raw_rings.append(r)
    base = lib.ul_ring_cqes(r.ptr)
    n = 100
    for ud in range(1, n + 1):
        assert lib.ul_prep_nop(r.ptr, ud) == 0
    seen: collections.Counter[int] = collections.Counter()
    sizes = []
    while sum(seen.values()) < n:
        cq = raw_run(r)
        sizes.append(len(cq))
        seen.update(ud for ud, _, _ in cq)
    assert seen == collections.Counter(range(1, n + 1))
    assert max(sizes) == 7 and all(0 < s <= 7 for s in sizes)
    assert lib.ul_ring_cqes(r.ptr) == base


def test_reap_capacity_boundary_with_overflow(raw_rings: list[RawRing]) -> None:
    # Reap array (6) larger than the CQ (4): one ul_run reaps the CQ, flushes
    # the overflow list and reaps again behind the first batch.
    r = RawRing(4, 4, 0, reap=6)
    raw_rings.append(r)
    base = lib.ul_ring_cqes(r.ptr)
    n = 40
    for ud in range(1, n + 1):
        assert lib.ul_prep_nop(r.ptr, ud) == 0
    assert lib.ul_submit(r.ptr) >= 0
    seen: collections.Counter[int] = collections.Counter()
    sizes = []
    while sum(seen.values()) < n:
        cq = raw_run(r)
        sizes.append(len(cq))
        seen.update(ud for ud, _, _ in cq)
    assert seen == collections.Counter(range(1, n + 1))
    assert 6 in sizes                     # the second reap filled behind the first
    assert lib.ul_ring_cqes(r.ptr) == base
    assert stats(r.ptr).cq_overflow_flushes >= 1


def test_reap_more_than_ring_reap_capacity(rings: list[Ring]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    n = _ring.REAP_CAPACITY + 777
    assert ring.features.cq_entries >= n
    for ud in range(1, n + 1):
        assert lib.ul_prep_nop(ring.ptr, ud) == 0
    seen: collections.Counter[int] = collections.Counter()
    first = None
    while sum(seen.values()) < n:
        cq = run(ring)
        assert len(cq) <= _ring.REAP_CAPACITY
        first = len(cq) if first is None else first
        seen.update(ud for ud, _, _ in cq)
    assert first == _ring.REAP_CAPACITY
    assert seen == collections.Counter(range(1, n + 1))


# ---- waiting and timeouts -----------------------------------------------------------


def test_run_timeout_with_nothing_in_flight_returns_zero(variant: str,
                                                         rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    for must_enter in (1, 0):
        before = stats(ring.ptr).enters
        assert lib.ul_run(ring.ptr, 2_000_000, must_enter) == 0     # -ETIME swallowed
        assert stats(ring.ptr).enters == before + 1                 # it really waited
    # A zero timeout with nothing to do does not enter at all.
    before = stats(ring.ptr).enters
    assert lib.ul_run(ring.ptr, 0, 0) == 0
    assert stats(ring.ptr).enters == before


def test_timeout_op_completes_with_etime(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    assert lib.ul_prep_timeout(ring.ptr, -1, 0, 1) == -errno.EINVAL
    assert stats(ring.ptr).sq_pending == 0
    assert lib.ul_prep_timeout(ring.ptr, 1_500_000, 0, 1) == 0
    assert wait_for(ring, {1})[1] == (-errno.ETIME, 0)


def test_timeouts_prepared_together_keep_their_own_timespec(rings: list[Ring]) -> None:
    # Each SQE slot has its own timespec: a long timeout prepared after a short
    # one in the same batch must not stretch the short one (a shared timespec
    # would make the first wait below last a minute: a timeout failure).
    ring = new_ring(rings, "defer_taskrun")
    assert lib.ul_prep_timeout(ring.ptr, 1_000_000, 0, 1) == 0
    assert lib.ul_prep_timeout(ring.ptr, 3600 * 10**9, 0, 2) == 0
    seen: list[tuple[int, int, int]] = []
    assert wait_for(ring, {1}, seen)[1][0] == -errno.ETIME
    assert 2 not in {ud for ud, _, _ in seen}
    assert lib.ul_prep_cancel(ring.ptr, 2, -1, 0, 3) == 0
    got = wait_for(ring, {2, 3})
    assert got[2][0] == -errno.ECANCELED and got[3][0] == 0


def test_timeout_with_count_completes_on_other_completions(rings: list[Ring]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    assert lib.ul_prep_timeout(ring.ptr, 3600 * 10**9, 1, 1) == 0
    assert lib.ul_prep_nop(ring.ptr, 2) == 0
    assert wait_for(ring, {1, 2}) == {1: (0, 0), 2: (0, 0)}


def test_infinite_wait_woken_by_eventfd_write_from_thread(variant: str,
                                                          rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    buf = ffi.new("uint64_t *")
    try:
        assert lib.ul_prep_rw(ring.ptr, _ring.OP_READ, efd, buf, 8, OFF_CURRENT, 0, 1) == 0
        assert run(ring, 0) == []                 # submitted, nothing to read yet
        writer = threading.Thread(target=os.eventfd_write, args=(efd, 42))
        writer.start()
        got = wait_for(ring, {1})                  # timeout -1: only the write wakes us
        writer.join()
        assert got[1][0] == 8 and buf[0] == 42
    finally:
        os.close(efd)


def test_infinite_wait_woken_by_msg_ring_from_thread(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    supported = ffi.new("uint8_t[]", 256)
    lib.ul_probe(ring.ptr, supported, 256)
    if not supported[OP_MSG_RING]:
        pytest.skip("kernel lacks IORING_OP_MSG_RING (5.18)")
    sender_result: list[Any] = []

    def send() -> None:
        # A second ring, in another thread, posts a CQE into ours.
        out = ffi.new("ul_ring **")
        assert lib.ul_ring_create(out, 4, 0, 0, 4, ffi.NULL) == 0
        try:
            lib.ul_prep_ext(out[0], OP_MSG_RING, ring.fd, ffi.NULL, 1234, 77, 0, 0,
                            0, 0, 0, 0, 5)
            n = lib.ul_run(out[0], -1, 1)
            sender_result.extend(cqes_of(out[0], n))
        finally:
            lib.ul_ring_destroy(out[0])

    t = threading.Thread(target=send)
    t.start()
    got = wait_for(ring, {77})
    t.join()
    assert got[77] == (1234, 0)
    assert sender_result == [(5, 0, 0)]


# ---- kernel errors -> negative errno -> OSError -----------------------------------------


def test_read_on_bad_fd_gives_ebadf(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    buf = ffi.new("char[]", 16)
    assert lib.ul_prep_rw(ring.ptr, _ring.OP_READ, closed_fd(), buf, 16, OFF_CURRENT, 0, 1) == 0
    res = wait_for(ring, {1})[1][0]
    assert res == -errno.EBADF
    exc = _proactor.os_error(res)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    assert exc.strerror == os.strerror(errno.EBADF)


def test_recv_on_non_socket_gives_enotsock(variant: str, rings: list[Ring]) -> None:
    ring = new_ring(rings, variant)
    r, w = os.pipe()
    buf = ffi.new("char[]", 16)
    try:
        assert lib.ul_prep_rw(ring.ptr, _ring.OP_RECV, r, buf, 16, 0, 0, 1) == 0
        res = wait_for(ring, {1})[1][0]
    finally:
        os.close(r)
        os.close(w)
    assert res == -errno.ENOTSOCK
    assert _proactor.os_error(res).errno == errno.ENOTSOCK


def test_send_to_closed_peer_gives_epipe_as_broken_pipe(
        rings: list[Ring], sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    a, b = sockpair
    b.close()
    data = ffi.from_buffer(b"hello")
    assert lib.ul_prep_rw(ring.ptr, _ring.OP_SEND, a.fileno(), data, 5, 0,
                          socket.MSG_NOSIGNAL, 1) == 0
    res = wait_for(ring, {1})[1][0]
    assert res == -errno.EPIPE
    assert isinstance(_proactor.os_error(res), BrokenPipeError)


def test_ring_level_errors_become_oserror() -> None:
    ring = Ring(disable={"defer_taskrun", "coop_taskrun"})
    try:
        with pytest.raises(OSError) as info:
            ring.create_bufring(1, 3, 64)           # not a power of two
        assert info.value.errno == errno.EINVAL
    finally:
        ring.close()


# ---- cancellation ---------------------------------------------------------------------


def test_cancel_inflight_recv(variant: str, rings: list[Ring],
                              sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, variant)
    a, b = sockpair
    buf = ffi.new("char[]", 64)
    assert lib.ul_prep_rw(ring.ptr, _ring.OP_RECV, a.fileno(), buf, 64, 0, 0, 1) == 0
    assert run(ring, 0) == []
    assert lib.ul_prep_cancel(ring.ptr, 1, -1, 0, 2) == 0
    seen: list[tuple[int, int, int]] = []
    got = wait_for(ring, {1, 2}, seen)
    assert got[1] == (-errno.ECANCELED, 0)
    assert got[2][0] == 0
    # Exactly one CQE each, and none later: a NOP after them is the fence.
    assert lib.ul_prep_nop(ring.ptr, 3) == 0
    wait_for(ring, {3}, seen)
    b.send(b"late")                             # would complete a still-armed recv
    assert lib.ul_prep_nop(ring.ptr, 4) == 0
    wait_for(ring, {4}, seen)
    assert collections.Counter(ud for ud, _, _ in seen) == {1: 1, 2: 1, 3: 1, 4: 1}
    a.setblocking(False)
    assert a.recv(16) == b"late"                # still there: nothing was armed


def test_cancel_unknown_target_gives_enoent(rings: list[Ring]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    assert lib.ul_prep_cancel(ring.ptr, 12345, -1, 0, 1) == 0
    assert wait_for(ring, {1})[1][0] == -errno.ENOENT


def test_cancel_all_by_fd(variant: str, rings: list[Ring],
                          sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, variant)
    a, _b = sockpair
    bufs = [ffi.new("char[]", 8) for _ in range(3)]
    for ud, buf in enumerate(bufs, 1):
        assert lib.ul_prep_rw(ring.ptr, _ring.OP_RECV, a.fileno(), buf, 8, 0, 0, ud) == 0
    assert run(ring, 0) == []
    assert lib.ul_prep_cancel(ring.ptr, 0, a.fileno(),
                              _ring.ASYNC_CANCEL_FD | _ring.ASYNC_CANCEL_ALL, 9) == 0
    got = wait_for(ring, {1, 2, 3, 9})
    assert got[9][0] == 3
    assert all(got[ud] == (-errno.ECANCELED, 0) for ud in (1, 2, 3))


# ---- provided-buffer rings ---------------------------------------------------------------

MARK = 0xA5


def bufring_or_skip(ring: Ring, bgid: int, nbufs: int, size: int) -> tuple[Any, Any]:
    if not ring.features.buf_ring:
        pytest.skip("kernel lacks provided-buffer rings (5.19)")
    if not ring.features.recv_multishot:
        pytest.skip("kernel lacks multishot recv (6.0)")
    br = ring.create_bufring(bgid, nbufs, size)
    mem = ffi.buffer(lib.ul_bufring_base(br), nbufs * size)
    mem[:] = bytes([MARK]) * (nbufs * size)
    return br, mem


def recv_data(ring: Ring, ud: int, mem: Any, size: int, expect: int = 1
              ) -> list[tuple[int, int, int, bytes]]:
    """Wait for `expect` CQEs of ud; (res, flags, bid, bytes) each."""
    out = []
    while len(out) < expect:
        for u, res, flags in run(ring):
            if u != ud:
                continue
            if res > 0:
                assert flags & F_BUFFER
                bid = flags >> _ring.CQE_BUFFER_SHIFT
                chunk = bytes(mem[bid * size: bid * size + size])
                # Only the received bytes were written; the rest is still marker.
                assert chunk[res:] == bytes([MARK]) * (size - res)
                out.append((res, flags, bid, chunk[:res]))
                # Re-mark it, so a later stale read would show.
                mem[bid * size: (bid + 1) * size] = bytes([MARK]) * size
            else:
                out.append((res, flags, -1, b""))
    return out


def test_multishot_recv_into_buffer_ring(variant: str, rings: list[Ring],
                                         sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, variant)
    a, b = sockpair
    br, mem = bufring_or_skip(ring, 3, 8, 64)
    assert lib.ul_prep_recv_multishot(ring.ptr, a.fileno(), 3, 0, 1) == 0
    assert run(ring, 0) == []
    used = []
    for i in range(20):                        # 20 messages through 8 buffers
        payload = bytes([i]) * (1 + (i * 7) % 64)
        b.send(payload)
        [(res, flags, bid, data)] = recv_data(ring, 1, mem, 64)
        assert flags & F_MORE and res == len(payload)
        assert data == payload
        assert 0 <= bid < 8
        used.append(bid)
        lib.ul_bufring_recycle(br, bid)
    assert sorted(set(used)) == list(range(8))   # the ring went round
    # Several recycled in one call.
    b.send(b"x" * 64 + b"y" * 64 + b"z" * 10)
    chunks = recv_data(ring, 1, mem, 64, expect=3)
    assert b"".join(c[3] for c in chunks) == b"x" * 64 + b"y" * 64 + b"z" * 10
    bids = ffi.new("uint16_t[]", [c[2] for c in chunks])
    lib.ul_bufring_recycle_many(br, bids, 3)
    b.send(b"after")
    assert recv_data(ring, 1, mem, 64)[0][3] == b"after"
    assert lib.ul_prep_cancel(ring.ptr, 1, -1, 0, 2) == 0
    res, flags = wait_for(ring, {1})[1]
    assert res == -errno.ECANCELED and not flags & F_MORE


def test_buffer_ring_exhaustion_then_recycle_and_rearm(
        variant: str, rings: list[Ring], sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, variant)
    a, b = sockpair
    br, mem = bufring_or_skip(ring, 4, 4, 16)
    assert lib.ul_prep_recv_multishot(ring.ptr, a.fileno(), 4, 0, 1) == 0
    bids = []
    for i in range(4):
        b.send(bytes([65 + i]) * 5)
        [(res, flags, bid, data)] = recv_data(ring, 1, mem, 16)
        assert flags & F_MORE and data == bytes([65 + i]) * 5
        bids.append(bid)
    assert sorted(bids) == [0, 1, 2, 3]
    # No buffer left: the recv ends with -ENOBUFS and no F_MORE; the data stays
    # in the socket.
    b.send(b"E" * 5)
    [(res, flags, _bid, _)] = recv_data(ring, 1, mem, 16)
    assert res == -errno.ENOBUFS and not flags & F_MORE
    # A bid that is not in the ring is ignored: re-arming still finds no buffer.
    lib.ul_bufring_recycle(br, 4)
    lib.ul_bufring_recycle_many(br, ffi.new("uint16_t[]", [100, 65535]), 2)
    assert lib.ul_prep_recv_multishot(ring.ptr, a.fileno(), 4, 0, 2) == 0
    [(res, flags, _bid, _)] = recv_data(ring, 2, mem, 16)
    assert res == -errno.ENOBUFS and not flags & F_MORE
    # Recycle all four and re-arm: the waiting bytes arrive, then new ones.
    lib.ul_bufring_recycle_many(br, ffi.new("uint16_t[]", bids), 4)
    b.send(b"F" * 30)
    assert lib.ul_prep_recv_multishot(ring.ptr, a.fileno(), 4, 0, 3) == 0
    chunks = recv_data(ring, 3, mem, 16, expect=3)
    assert b"".join(c[3] for c in chunks) == b"E" * 5 + b"F" * 30
    assert all(c[1] & F_MORE for c in chunks)
    assert len({c[2] for c in chunks}) == 3


def test_short_message_in_reused_buffer_is_not_stale(
        rings: list[Ring], sockpair: tuple[socket.socket, socket.socket]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    a, b = sockpair
    br, mem = bufring_or_skip(ring, 5, 1, 32)    # one buffer: always reused
    assert lib.ul_prep_recv_multishot(ring.ptr, a.fileno(), 5, 0, 1) == 0
    b.send(b"L" * 32)
    [(res, _f, bid, data)] = recv_data(ring, 1, mem, 32)
    assert (res, bid, data) == (32, 0, b"L" * 32)
    mem[0:32] = b"L" * 32                        # leave the old bytes in place
    lib.ul_bufring_recycle(br, 0)
    b.send(b"s")
    for u, res, flags in wait_for_list(ring, 1):
        assert (res, flags >> 16) == (1, 0)
        assert bytes(mem[0:res]) == b"s"


def wait_for_list(ring: Ring, ud: int) -> list[tuple[int, int, int]]:
    while True:
        cq = [c for c in run(ring) if c[0] == ud]
        if cq:
            return cq


def test_bufring_create_errors(rings: list[Ring]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    if not ring.features.buf_ring:
        pytest.skip("kernel lacks provided-buffer rings (5.19)")
    out = ffi.new("ul_bufring **")
    for nbufs, size in ((0, 64), (3, 64), (65536, 64), (4, 0)):
        assert lib.ul_bufring_create(ring.ptr, 7, nbufs, size, out) == -errno.EINVAL
        assert out[0] == ffi.NULL
    assert lib.ul_bufring_create(ring.ptr, 7, 4, 64, out) == 0
    first = out[0]
    assert lib.ul_bufring_create(ring.ptr, 7, 4, 64, out) == -errno.EEXIST
    assert lib.ul_bufring_destroy(first) == 0
    assert lib.ul_bufring_create(ring.ptr, 7, 4, 64, out) == 0   # the bgid is free again
    assert lib.ul_bufring_destroy(out[0]) == 0


# ---- fork, registered fds, threads -------------------------------------------------------


def test_fork_reset_makes_every_entry_point_ebadfd(raw_rings: list[RawRing]) -> None:
    r = RawRing(8, 16, 0)
    raw_rings.append(r)
    br = ffi.new("ul_bufring **")
    assert lib.ul_bufring_create(r.ptr, 1, 4, 64, br) == 0
    assert lib.ul_prep_nop(r.ptr, 1) == 0
    cqes = lib.ul_ring_cqes(r.ptr)
    lib.ul_ring_fork_reset(r.ptr)
    p = r.ptr
    buf = ffi.new("char[]", 8)
    EBADFD = -errno.EBADFD
    assert lib.ul_ring_enable(p) == EBADFD
    assert lib.ul_ring_register_fd(p) == EBADFD
    assert lib.ul_probe(p, ffi.new("uint8_t[]", 8), 8) == EBADFD
    assert lib.ul_submit(p) == EBADFD
    assert lib.ul_run(p, 0, 1) == EBADFD
    assert lib.ul_run(p, -1, 1) == EBADFD
    assert lib.ul_reap(p) == EBADFD
    assert lib.ul_prep_nop(p, 2) == EBADFD
    assert lib.ul_prep_rw(p, _ring.OP_READ, 0, buf, 8, 0, 0, 3) == EBADFD
    assert lib.ul_prep_ext(p, _ring.OP_READ, 0, buf, 8, 0, 0, 0, 0, 0, 0, 0, 4) == EBADFD
    assert lib.ul_prep_recv_multishot(p, 0, 1, 0, 5) == EBADFD
    assert lib.ul_prep_accept(p, 0, ffi.NULL, ffi.NULL, 0, 0, 6) == EBADFD
    assert lib.ul_prep_poll(p, 0, 1, 0, 7) == EBADFD
    assert lib.ul_prep_cancel(p, 1, -1, 0, 8) == EBADFD
    assert lib.ul_prep_timeout(p, 1000, 0, 9) == EBADFD
    out = ffi.new("ul_bufring **")
    assert lib.ul_bufring_create(p, 2, 4, 64, out) == EBADFD
    st = stats(p)                        # must not touch the dropped mappings
    assert (st.sq_pending, st.cq_overflow_kernel) == (0, 0)
    assert lib.ul_ring_cqes(p) == cqes
    assert lib.ul_bufring_destroy(br[0]) == EBADFD   # freed (nothing kernel-side)
    lib.ul_ring_fork_reset(p)                        # twice is harmless


def test_forked_child_cannot_use_ring_and_leaves_parent_intact(rings: list[Ring]) -> None:
    ring = new_ring(rings, "defer_taskrun")
    assert lib.ul_prep_nop(ring.ptr, 1) == 0         # pending in the parent's SQ
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # pytest's faulthandler watchdog is a thread: fork() warns about it.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            checks = [
                ring.forked,
                lib.ul_prep_nop(ring.ptr, 2) == -errno.EBADFD,
                lib.ul_run(ring.ptr, 0, 1) == -errno.EBADFD,
                lib.ul_submit(ring.ptr) == -errno.EBADFD,
                stats(ring.ptr).sq_pending == 0,
            ]
            try:
                ring.run(0)
                checks.append(False)
            except RuntimeError as exc:
                checks.append("fork" in str(exc))
            os.write(wfd, bytes(int(c) for c in checks))
        except BaseException:
            code = 1
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert report == b"\x01" * 6
    # The child neither submitted our SQE nor disturbed the rings.
    assert stats(ring.ptr).sq_pending == 1
    assert lib.ul_prep_nop(ring.ptr, 3) == 0
    assert drain_nops(ring, 2) == {1: 1, 3: 1}


def test_registered_ring_fd_is_released_on_destroy(raw_rings: list[RawRing]) -> None:
    # A thread has 16 registration slots; a destroyed ring must give its back
    # (and must not stay alive in the kernel through the registration).
    for i in range(40):
        out = ffi.new("ul_ring **")
        assert lib.ul_ring_create(out, 4, 0, 0, 4, ffi.NULL) == 0
        idx = lib.ul_ring_register_fd(out[0])
        assert idx >= 0, f"ring {i}: {os.strerror(-idx)}"
        assert lib.ul_ring_register_fd(out[0]) == idx    # already registered here
        assert lib.ul_prep_nop(out[0], i) == 0
        n = lib.ul_run(out[0], -1, 1)
        assert cqes_of(out[0], n) == [(i, 0, 0)]
        lib.ul_ring_destroy(out[0])


def in_thread(fn: Any) -> Any:
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def nop_round_trip(ptr: Any, ud: int) -> list[tuple[int, int, int]]:
    assert lib.ul_prep_nop(ptr, ud) == 0
    n = lib.ul_run(ptr, 1_000_000_000, 1)    # bounded: a lost NOP fails, not hangs
    assert n >= 0, os.strerror(-n)
    return cqes_of(ptr, n)


def test_registered_index_is_used_only_by_its_thread(raw_rings: list[RawRing]) -> None:
    # x is registered by this thread, y by another; the same index names a
    # different ring (or none) in each thread's table.
    x = RawRing(4, 8)
    y = RawRing(4, 8)
    raw_rings += [x, y]
    assert lib.ul_ring_register_fd(x.ptr) >= 0
    hold = threading.Event()
    registered = threading.Event()
    yidx: list[int] = []

    def owner() -> None:   # stays alive, so its registration of y does too
        yidx.append(lib.ul_ring_register_fd(y.ptr))
        registered.set()
        hold.wait()

    t = threading.Thread(target=owner)
    t.start()
    try:
        registered.wait()
        assert yidx[0] >= 0
        # This thread drives y: it must enter through y's fd, not through an
        # index that is x's here.
        assert nop_round_trip(y.ptr, 1) == [(1, 0, 0)]
        assert nop_round_trip(x.ptr, 2) == [(2, 0, 0)]
        # Re-registering y here must not drop x's registration in this thread.
        assert lib.ul_ring_register_fd(y.ptr) >= 0
        assert nop_round_trip(x.ptr, 3) == [(3, 0, 0)]
        assert nop_round_trip(y.ptr, 4) == [(4, 0, 0)]
    finally:
        hold.set()
        t.join()


def test_disabled_ring_enabled_by_another_thread(rings: list[Ring]) -> None:
    disable, expected = VARIANTS["defer_taskrun"]
    ring = Ring(disable=disable)                 # created R_DISABLED, not claimed
    rings.append(ring)
    if set(ring.features.setup_flags) != expected:
        pytest.skip("kernel lacks SINGLE_ISSUER + DEFER_TASKRUN")
    assert lib.ul_prep_nop(ring.ptr, 1) == 0
    assert lib.ul_run(ring.ptr, 0, 1) == -errno.EBADFD   # disabled: not submitted

    def owner() -> tuple[int, int, list[tuple[int, int, int]]]:
        enabled = lib.ul_ring_enable(ring.ptr)
        idx = lib.ul_ring_register_fd(ring.ptr)
        got = []
        while len(got) < 2:
            if not got:
                assert lib.ul_prep_nop(ring.ptr, 2) == 0
            got += cqes_of(ring.ptr, lib.ul_run(ring.ptr, -1, 1))
        return enabled, idx, got

    enabled, idx, got = in_thread(owner)
    assert enabled == 0 and idx >= 0
    assert sorted(got) == [(1, 0, 0), (2, 0, 0)]
    # SINGLE_ISSUER: the enabling thread is the only submitter now.
    assert lib.ul_prep_nop(ring.ptr, 3) == 0
    assert lib.ul_run(ring.ptr, 0, 1) == -errno.EEXIST
    with pytest.raises(OSError) as info:
        ring.run(0)
    assert info.value.errno == errno.EEXIST


class Worker:
    """One long-lived thread that runs calls for the test (a ring's owner)."""

    def __init__(self) -> None:
        self._calls: list[Any] = []
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._loop)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._calls))
                fn, box, done = self._calls.pop(0)
            if fn is None:
                return
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - re-raised in call()
                box.append((False, exc))
            done.set()

    def call(self, fn: Any) -> Any:
        box: list[Any] = []
        done = threading.Event()
        with self._cv:
            self._calls.append((fn, box, done))
            self._cv.notify()
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        with self._cv:
            self._calls.append((None, None, None))
            self._cv.notify()
        self._thread.join()


def is_mapped(addr: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def test_refused_bufring_destroy_frees_nothing(rings: list[Ring]) -> None:
    # With SINGLE_ISSUER only the owner thread may unregister a buffer ring.
    # A refused unregister leaves the kernel able to fill the buffers, so
    # their memory must stay mapped until the owner destroys the ring.
    disable, expected = VARIANTS["defer_taskrun"]
    ring = Ring(disable=disable)
    rings.append(ring)
    if set(ring.features.setup_flags) != expected or not ring.features.buf_ring:
        pytest.skip("kernel lacks SINGLE_ISSUER + DEFER_TASKRUN or buffer rings")
    out = ffi.new("ul_bufring **")
    assert lib.ul_bufring_create(ring.ptr, 9, 4, 4096, out) == 0   # still disabled
    br = out[0]
    base = int(ffi.cast("uintptr_t", lib.ul_bufring_base(br)))
    owner = Worker()
    try:
        assert owner.call(lambda: lib.ul_ring_enable(ring.ptr)) == 0
        assert lib.ul_bufring_destroy(br) == -errno.EEXIST
        assert is_mapped(base)
        ffi.buffer(lib.ul_bufring_base(br), 4 * 4096)[:] = b"\0" * (4 * 4096)
        assert owner.call(lambda: lib.ul_bufring_destroy(br)) == 0
    finally:
        owner.stop()


# ---- the zero-copy ops through the generic prep (ul_prep_ext) ----------------------


def test_splice_through_prep_ext(rings: list[Ring], tmp_path: Any) -> None:
    """SPLICE needs splice_off_in (the addr field) and splice_fd_in (the file_index
    field): ul_prep_ext expresses both.  file -> pipe at an offset, then pipe -> pipe
    with "no offset" (-1) on both ends; the file position is not moved."""
    ring = new_ring(rings)
    if "splice" not in ring.features.ops:
        pytest.skip("no IORING_OP_SPLICE")
    data = os.urandom(100_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    r1, w1 = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    try:
        assert lib.ul_prep_ext(ring.ptr, _ring.OP_SPLICE, w1, ffi.cast("void *", 1000),
                               5000, OFF_CURRENT, 0, 0, fd, 0, 0, 0, 1) == 0
        assert wait_for(ring, {1})[1] == (5000, 0)
        assert lib.ul_prep_ext(ring.ptr, _ring.OP_SPLICE, w2, ffi.cast("void *", OFF_CURRENT),
                               5000, OFF_CURRENT, 0, 0, r1, 0, 0, 0, 2) == 0
        assert wait_for(ring, {2})[2] == (5000, 0)
        assert os.read(r2, 10_000) == data[1000:6000]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
    finally:
        for f in (fd, r1, w1, r2, w2):
            os.close(f)


def test_send_zc_result_then_notification(rings: list[Ring]) -> None:
    """SEND_ZC through ul_prep_ext: a result CQE with F_MORE, then a notification
    (F_NOTIF, no F_MORE) with the same user_data."""
    ring = new_ring(rings)
    if "send_zc" not in ring.features.ops:
        pytest.skip("no IORING_OP_SEND_ZC")
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
        with a, b:
            payload = ffi.from_buffer(os.urandom(200_000))
            assert lib.ul_prep_ext(ring.ptr, _ring.OP_SEND_ZC, a.fileno(), payload,
                                   len(payload), 0, socket.MSG_NOSIGNAL, 0, 0, 0, 0,
                                   0, 7) == 0
            seen: list[tuple[int, int, int]] = []
            got = bytearray()
            while not any(flags & _ring.CQE_F_NOTIF for _ud, _res, flags in seen):
                seen.extend(run(ring, 10_000_000))
                b.setblocking(False)
                try:
                    got += b.recv(1 << 20)
                except BlockingIOError:
                    pass
            assert seen[0][0] == 7 and seen[0][1] == len(payload)
            assert seen[0][2] & F_MORE
            assert seen[-1][0] == 7 and not seen[-1][2] & F_MORE
            assert len(seen) == 2
