"""The ring: the only module that imports the compiled C core.

How uringloop talks to the kernel
=================================

One ``Ring`` is one io_uring instance: a submission queue (SQ) we fill and a
completion queue (CQ) the kernel fills, both shared memory.  The C core
(``_build/csrc``) does the memory work; this module decides how the ring is
set up, turns kernel refusals into one clear exception, and exposes what the
running kernel supports as an immutable :class:`Features`.

Setup flags are probed, never guessed from a version string: we ask for the
best set (SINGLE_ISSUER + DEFER_TASKRUN + SUBMIT_ALL) and step down on
EINVAL (COOP_TASKRUN + TASKRUN_FLAG, then SUBMIT_ALL, then nothing).
Opcodes are probed with IORING_REGISTER_PROBE.  Any optional feature can be
switched off, by argument or by ``URINGLOOP_DISABLE=name,name`` in the
environment, so every fallback path stays testable on a new kernel.

A ring created with SINGLE_ISSUER belongs to one thread.  It is created
disabled (R_DISABLED) and enabled by the first thread that runs the loop.

After ``fork()`` the child shares the parent's ring mappings; every ring in
the child is reset at once (mappings dropped without a write, fd closed) and
refuses further use with a clear error.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import os
import resource
import threading
import weakref
from typing import Any, Iterable

from . import _ring_cffi  # type: ignore[attr-defined]

ffi: Any = _ring_cffi.ffi
lib: Any = _ring_cffi.lib

__all__ = [
    "Features",
    "Ring",
    "UringUnavailableError",
    "OPTIONAL_FEATURES",
    "ffi",
    "lib",
]

# ---- kernel ABI constants (uapi values; support is probed at run time) ----

OP_NOP = 0
OP_READV = 1
OP_WRITEV = 2
OP_FSYNC = 3
OP_POLL_ADD = 6
OP_POLL_REMOVE = 7
OP_SENDMSG = 9
OP_RECVMSG = 10
OP_TIMEOUT = 11
OP_ACCEPT = 13
OP_ASYNC_CANCEL = 14
OP_CONNECT = 16
OP_OPENAT = 18
OP_CLOSE = 19
OP_STATX = 21
OP_READ = 22
OP_WRITE = 23
OP_SEND = 26
OP_RECV = 27
OP_SPLICE = 30
OP_SHUTDOWN = 34
OP_RENAMEAT = 35
OP_UNLINKAT = 36
OP_MKDIRAT = 37
OP_SOCKET = 45
OP_SEND_ZC = 47
OP_WAITID = 50   # 51 is IORING_OP_FUTEX_WAIT
OP_FTRUNCATE = 55

OPCODE_NAMES = {
    OP_NOP: "nop", OP_READV: "readv", OP_WRITEV: "writev", OP_FSYNC: "fsync",
    OP_POLL_ADD: "poll_add", OP_POLL_REMOVE: "poll_remove", OP_SENDMSG: "sendmsg",
    OP_RECVMSG: "recvmsg", OP_TIMEOUT: "timeout", OP_ACCEPT: "accept",
    OP_ASYNC_CANCEL: "async_cancel", OP_CONNECT: "connect", OP_OPENAT: "openat",
    OP_CLOSE: "close", OP_STATX: "statx", OP_READ: "read", OP_WRITE: "write",
    OP_SEND: "send", OP_RECV: "recv", OP_SPLICE: "splice", OP_SHUTDOWN: "shutdown",
    OP_RENAMEAT: "renameat", OP_UNLINKAT: "unlinkat", OP_MKDIRAT: "mkdirat",
    OP_SOCKET: "socket", OP_SEND_ZC: "send_zc", OP_WAITID: "waitid",
    OP_FTRUNCATE: "ftruncate",
}

CQE_F_BUFFER = 1 << 0
CQE_F_MORE = 1 << 1
CQE_F_SOCK_NONEMPTY = 1 << 2
CQE_F_NOTIF = 1 << 3
# SEND_ZC: ask for the notification's res to say whether the kernel copied
# anyway (6.2+), and the bit it sets then.
SEND_ZC_REPORT_USAGE = 1 << 3
NOTIF_USAGE_ZC_COPIED = 1 << 31
SPLICE_F_FD_IN_FIXED = 1 << 31
CQE_BUFFER_SHIFT = 16

ASYNC_CANCEL_ALL = 1 << 0
ASYNC_CANCEL_FD = 1 << 1

FEAT_SINGLE_MMAP = 1 << 0
FEAT_NODROP = 1 << 1
FEAT_FAST_POLL = 1 << 5
FEAT_EXT_ARG = 1 << 8
FEAT_NATIVE_WORKERS = 1 << 9
FEAT_RSRC_TAGS = 1 << 10

SETUP_FLAG_NAMES = {
    lib.UL_SETUP_R_DISABLED: "R_DISABLED",
    lib.UL_SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    lib.UL_SETUP_COOP_TASKRUN: "COOP_TASKRUN",
    lib.UL_SETUP_TASKRUN_FLAG: "TASKRUN_FLAG",
    lib.UL_SETUP_SINGLE_ISSUER: "SINGLE_ISSUER",
    lib.UL_SETUP_DEFER_TASKRUN: "DEFER_TASKRUN",
}
FEATURE_NAMES = {
    FEAT_SINGLE_MMAP: "SINGLE_MMAP", FEAT_NODROP: "NODROP",
    FEAT_FAST_POLL: "FAST_POLL", FEAT_EXT_ARG: "EXT_ARG",
    FEAT_NATIVE_WORKERS: "NATIVE_WORKERS", FEAT_RSRC_TAGS: "RSRC_TAGS",
}

#: Kernel features uringloop cannot work without: NODROP (5.5) so no completion
#: is ever lost, EXT_ARG (5.11) so one io_uring_enter both submits and waits
#: with a timeout.
REQUIRED_FEATURES = {FEAT_NODROP: "NODROP", FEAT_EXT_ARG: "EXT_ARG"}


def missing_required_features(features: int) -> list[str]:
    """Names of the REQUIRED_FEATURES absent from io_uring_params.features."""
    return [name for bit, name in REQUIRED_FEATURES.items() if not features & bit]

#: Optional features, each with a fallback path, that can be switched off.
OPTIONAL_FEATURES = frozenset({
    "defer_taskrun",      # -> COOP_TASKRUN
    "coop_taskrun",       # -> plain task work
    "submit_all",
    "registered_ring_fd",  # -> enter through the ring fd
    "recv_multishot",     # -> single-shot recv per read
    "accept_multishot",   # -> single-shot accept
    "buf_ring",           # -> recv into our own buffers (implies no recv_multishot)
    "poll_multishot",     # -> re-armed single-shot poll
    "waitid",             # -> pidfd poll
    "send_zc",            # -> plain IORING_OP_SEND for every write
    "splice",             # -> os.sendfile driven by ring polls for sendfile
})

#: The setup flags each optional setup feature stands for.
_SETUP_FEATURE_FLAGS = {
    "defer_taskrun": lib.UL_SETUP_SINGLE_ISSUER | lib.UL_SETUP_DEFER_TASKRUN
    | lib.UL_SETUP_R_DISABLED,
    "coop_taskrun": lib.UL_SETUP_COOP_TASKRUN | lib.UL_SETUP_TASKRUN_FLAG,
    "submit_all": lib.UL_SETUP_SUBMIT_ALL,
}

_SETUP_LADDER = (
    # (the feature this rung is for, flags), best first; each step down on EINVAL.
    ("defer_taskrun", _SETUP_FEATURE_FLAGS["defer_taskrun"] | lib.UL_SETUP_SUBMIT_ALL),
    ("coop_taskrun", _SETUP_FEATURE_FLAGS["coop_taskrun"] | lib.UL_SETUP_SUBMIT_ALL),
    ("submit_all", lib.UL_SETUP_SUBMIT_ALL),
    (None, 0),
)


def _setup_attempts(disabled: frozenset[str]) -> list[int]:
    """The setup flags to try, best first, with the disabled features left out.

    A rung whose own feature is disabled is skipped; a disabled feature that a
    rung merely combines with (SUBMIT_ALL) is stripped from it, so switching
    one feature off never takes another down with it.
    """
    strip = 0
    for name in disabled & _SETUP_FEATURE_FLAGS.keys():
        strip |= _SETUP_FEATURE_FLAGS[name]
    attempts: list[int] = []
    for feature, flags in _SETUP_LADDER:
        if feature in disabled:
            continue
        flags &= ~strip
        if flags not in attempts:
            attempts.append(flags)
    return attempts

DEFAULT_SQ_ENTRIES = 1024
DEFAULT_CQ_ENTRIES = 8192
REAP_CAPACITY = 4096


class UringUnavailableError(OSError):
    """io_uring cannot be used here; the message names the cause and the fix.

    Raised by ``uringloop.new_event_loop()`` (and ``Loop()``).  It is an
    ``OSError`` whose ``errno`` is the kernel's answer (ENOSYS, EPERM,
    ENOMEM, EINVAL...).  ``cause`` is a short machine-readable key:
    ``"no-kernel-support"``, ``"sysctl-disabled"``, ``"sysctl-group"``,
    ``"seccomp"``, ``"memlock"``, ``"missing-feature"`` or ``"other"``.
    """

    def __init__(self, err: int, cause: str, message: str) -> None:
        super().__init__(err, message)
        self.cause = cause

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError pickles as (errno, strerror); keep the cause, so the error
        # survives a trip through multiprocessing or concurrent.futures.
        return (type(self), (self.errno, self.cause, self.strerror))


def read_sysctl_io_uring_disabled() -> int | None:
    """The ``kernel.io_uring_disabled`` sysctl (Linux 6.6+), or None."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_seccomp_mode() -> int | None:
    """``Seccomp:`` from /proc/self/status (0 none, 1 strict, 2 filter)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


_FALLBACK_HINT = "or use the stock loop: uringloop.new_event_loop(fallback=True)"


def _memlock_text() -> str:
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    except (OSError, ValueError):
        return "RLIMIT_MEMLOCK"
    if soft == resource.RLIM_INFINITY:
        return "RLIMIT_MEMLOCK (unlimited here)"
    return f"RLIMIT_MEMLOCK ({soft // 1024} KiB here)"


def diagnose(err: int, call: str = "io_uring_setup") -> UringUnavailableError:
    """Turn the errno of a refused io_uring syscall into the exception users see.

    ``call`` names the syscall that failed: io_uring_setup, or, when a ring
    was created but cannot be driven, io_uring_register / io_uring_enter.
    The sysctl and seccomp state is read now, to name the cause.
    """
    name = _errno.errorcode.get(err, str(err))
    prefix = f"io_uring is not available ({name} from {call}): "
    seccomp = read_seccomp_mode()
    if err == _errno.ENOSYS:
        hint = (" A seccomp filter is active here (Seccomp: 2 in /proc/self/status); "
                "some sandboxes answer ENOSYS for syscalls they do not know, so the "
                "filter may be what hides io_uring."
                if seccomp == 2 else "")
        return UringUnavailableError(
            err, "no-kernel-support",
            prefix + "this kernel has no io_uring (older than 5.1, or built without "
            "CONFIG_IO_URING)." + hint + " Fix: run on Linux 5.19 or newer with "
            f"io_uring enabled, {_FALLBACK_HINT}.")
    if err == _errno.EPERM:
        disabled = read_sysctl_io_uring_disabled() if call == "io_uring_setup" else None
        if disabled == 2:
            return UringUnavailableError(
                err, "sysctl-disabled",
                prefix + "the sysctl kernel.io_uring_disabled=2 forbids io_uring for every "
                "process. Fix: `sysctl -w kernel.io_uring_disabled=0` (as root), "
                f"{_FALLBACK_HINT}.")
        if disabled == 1:
            return UringUnavailableError(
                err, "sysctl-group",
                prefix + "the sysctl kernel.io_uring_disabled=1 limits io_uring to "
                "CAP_SYS_ADMIN and the group in kernel.io_uring_group. Fix: add this "
                "user to that group, set kernel.io_uring_disabled=0, "
                f"{_FALLBACK_HINT}.")
        where = ("a seccomp filter is active (Seccomp: 2 in /proc/self/status) and "
                 if seccomp == 2 else "")
        return UringUnavailableError(
            err, "seccomp",
            prefix + where + f"{call} was refused, typically by a container's "
            "seccomp profile (Docker, containerd and Kubernetes block io_uring by "
            "default), or by a security module. Fix: run the container with a seccomp "
            "profile that allows io_uring_setup, io_uring_enter and io_uring_register "
            f"(see docs/operations.md), {_FALLBACK_HINT}.")
    if err == _errno.ENOMEM:
        return UringUnavailableError(
            err, "memlock",
            prefix + "the kernel could not allocate the ring; kernels before 5.12 "
            f"charge it to {_memlock_text()}, newer ones to the memory cgroup. "
            "Fix: raise the memlock limit (`ulimit -l`, LimitMEMLOCK= for systemd, "
            f"--ulimit memlock= for Docker), {_FALLBACK_HINT}.")
    return UringUnavailableError(
        err, "other", prefix + f"{call} failed: {os.strerror(err)}. "
        f"Run `python -m uringloop doctor` for details, {_FALLBACK_HINT}.")


def _disabled_from_env() -> frozenset[str]:
    raw = os.environ.get("URINGLOOP_DISABLE", "")
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - OPTIONAL_FEATURES
    if unknown:
        raise ValueError(
            f"URINGLOOP_DISABLE names unknown features {sorted(unknown)}; "
            f"known: {sorted(OPTIONAL_FEATURES)}")
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class Features:
    """What the running kernel gave this ring, after any features were switched off."""

    setup_flags: frozenset[str]
    kernel_features: frozenset[str]
    ops: frozenset[str]
    sq_entries: int
    cq_entries: int
    defer_taskrun: bool
    coop_taskrun: bool
    submit_all: bool
    registered_ring_fd: bool
    recv_multishot: bool
    accept_multishot: bool
    buf_ring: bool
    poll_multishot: bool
    waitid: bool
    send_zc: bool
    splice: bool
    disabled: frozenset[str]

    def summary(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _create_ring(sq: int, cq: int, flags: int) -> tuple[Any, Any, int]:
    """One io_uring_setup() attempt: (ring cdata, ul_info, -errno or 0)."""
    out = ffi.new("ul_ring **")
    info = ffi.new("ul_info *")
    ret = lib.ul_ring_create(out, sq, cq, flags, REAP_CAPACITY, info)
    return out[0], info, ret


def _too_old(what: str) -> UringUnavailableError:
    return UringUnavailableError(
        _errno.ENOSYS, "missing-feature",
        f"io_uring is too old here: the kernel lacks {what}. uringloop needs "
        "Linux 5.11 or newer (5.19+ recommended). Fix: upgrade the kernel, "
        "or use uringloop.new_event_loop(fallback=True).")


def _check_ring(ptr: Any, features: int, supported: Any) -> UringUnavailableError | None:
    """Check a freshly created ring is one uringloop can drive; fill ``supported``.

    Returns the refusal to raise, or None.  Besides the required feature
    flags, both other io_uring syscalls are tried once: a seccomp profile may
    allow io_uring_setup yet refuse io_uring_register or io_uring_enter, and
    that must surface here, as a clear refusal, not as an OSError from the
    first loop iteration.
    """
    missing = missing_required_features(features)
    if missing:
        return _too_old(", ".join(missing))
    last = lib.ul_probe(ptr, supported, 256)
    if last == -_errno.EINVAL:
        return _too_old("IORING_REGISTER_PROBE")    # before 5.6
    if last < 0:
        return diagnose(-last, "io_uring_register")
    # An enter with nothing to submit: 0, or EBADFD while the ring is still
    # R_DISABLED (it is enabled by the thread that first runs the loop).
    ret = lib.ul_run(ptr, 0, 1)
    if ret < 0 and ret not in (-_errno.EBADFD, -_errno.EINTR):
        return diagnose(-ret, "io_uring_enter")
    return None


def _probe_bufring(ptr: Any) -> bool:
    """Provided-buffer rings (5.19): try to register a tiny one."""
    out = ffi.new("ul_bufring **")
    if lib.ul_bufring_create(ptr, 0xFFFF, 1, 64, out) != 0:
        return False
    lib.ul_bufring_destroy(out[0])
    return True


_live_rings: "weakref.WeakSet[Ring]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ring in list(_live_rings):
        ring._fork_reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Ring:
    """One io_uring instance and the kernel facts about it.

    Ownership: the Ring owns the ring fd, its three mappings, the reap array
    and every provided-buffer ring registered through it.  It never owns
    what in-flight operations point at; that is the proactor's op table.
    """

    def __init__(self, sq_entries: int = DEFAULT_SQ_ENTRIES,
                 cq_entries: int = DEFAULT_CQ_ENTRIES,
                 disable: Iterable[str] = ()) -> None:
        disabled = frozenset(disable) | _disabled_from_env()
        unknown = disabled - OPTIONAL_FEATURES
        if unknown:
            raise ValueError(f"unknown optional features {sorted(unknown)}")
        if sq_entries <= 0 or cq_entries < 0:
            raise ValueError("ring sizes must be positive")
        self.pid = os.getpid()
        self.forked = False
        self.closed = False
        self._owner_thread: int | None = None
        self.ptr, info = self._setup(sq_entries, cq_entries, disabled)
        self.fd = info.ring_fd
        self.cqes = lib.ul_ring_cqes(self.ptr)
        self.features = self._probe(info, disabled)
        self._bufrings: dict[int, Any] = {}
        _live_rings.add(self)

    # -- setup -------------------------------------------------------------

    def _setup(self, sq: int, cq: int, disabled: frozenset[str]) -> tuple[Any, Any]:
        last_err = _errno.EINVAL
        for flags in _setup_attempts(disabled):
            ptr, info, ret = _create_ring(sq, cq, flags)
            if ret == 0:
                return ptr, info
            last_err = -ret
            if last_err != _errno.EINVAL:
                break   # a refusal, not an unknown flag: stepping down won't help
        raise diagnose(last_err)

    def _probe(self, info: Any, disabled: frozenset[str]) -> Features:
        feats = info.features
        supported = ffi.new("uint8_t[]", 256)
        refusal = _check_ring(self.ptr, feats, supported)
        if refusal is not None:
            lib.ul_ring_forget(self.ptr)
            self.ptr = ffi.NULL
            raise refusal
        ops = frozenset(name for code, name in OPCODE_NAMES.items() if supported[code])
        flags = info.setup_flags
        flag_names = frozenset(n for bit, n in SETUP_FLAG_NAMES.items() if flags & bit)
        kernel_names = frozenset(n for bit, n in FEATURE_NAMES.items() if feats & bit)
        buf_ring = "buf_ring" not in disabled and _probe_bufring(self.ptr)
        # Multishot accept (5.19), multishot recv (6.0) and multishot poll (5.13)
        # have no opcode of their own: the probe-visible marker of each kernel
        # generation stands in for them -- the SOCKET opcode (5.19), the SEND_ZC
        # opcode (6.0) and the RSRC_TAGS feature flag (5.13).
        gen_519 = "socket" in ops
        gen_60 = "send_zc" in ops
        gen_513 = bool(feats & FEAT_RSRC_TAGS)
        return Features(
            setup_flags=flag_names - {"R_DISABLED"},
            kernel_features=kernel_names,
            ops=ops,
            sq_entries=info.sq_entries,
            cq_entries=info.cq_entries,
            defer_taskrun="DEFER_TASKRUN" in flag_names,
            coop_taskrun="COOP_TASKRUN" in flag_names,
            submit_all="SUBMIT_ALL" in flag_names,
            registered_ring_fd="registered_ring_fd" not in disabled,
            recv_multishot=buf_ring and gen_60 and "recv_multishot" not in disabled,
            accept_multishot=gen_519 and "accept_multishot" not in disabled,
            buf_ring=buf_ring,
            poll_multishot=gen_513 and "poll_multishot" not in disabled,
            waitid="waitid" in ops and "waitid" not in disabled,
            send_zc="send_zc" in ops and "send_zc" not in disabled,
            splice="splice" in ops and "splice" not in disabled,
            disabled=disabled,
        )

    # -- thread ownership --------------------------------------------------

    def claim_thread(self) -> None:
        """Bind the ring to the calling thread before its first submission.

        With SINGLE_ISSUER only one thread may ever submit; the ring is
        created disabled and enabled here, by the thread that runs the loop.
        The registered ring fd is per thread too.
        """
        # Checked on every run, not only the first: a forked child inherits the
        # owner thread's ident and must still be refused.
        self.check_usable()
        tid = threading.get_ident()
        if self._owner_thread == tid:
            return
        if self._owner_thread is not None and self.features.defer_taskrun:
            raise RuntimeError(
                "uringloop: this loop's io_uring was bound to another thread "
                "(SINGLE_ISSUER); an event loop can only be run from the thread that "
                "first ran it. Create the loop in the thread that runs it, or set "
                "URINGLOOP_DISABLE=defer_taskrun.")
        self._raise_for(lib.ul_ring_enable(self.ptr))
        if self.features.registered_ring_fd:
            lib.ul_ring_register_fd(self.ptr)   # best effort: failure keeps the plain fd
        self._owner_thread = tid

    @property
    def owner_thread(self) -> int | None:
        return self._owner_thread

    # -- errors --------------------------------------------------------------

    def check_usable(self) -> None:
        if self.forked or self.pid != os.getpid():
            raise RuntimeError(
                "uringloop: this event loop was created in process "
                f"{self.pid} and cannot be used after fork(); create a new event loop "
                "in the child process")
        if self.closed:
            raise RuntimeError("uringloop: the ring is closed")

    def _raise_for(self, ret: int) -> int:
        if ret < 0:
            if ret == -_errno.EBADFD:
                self.check_usable()
            raise OSError(-ret, os.strerror(-ret))
        return ret

    # -- submission / completion (cold paths; the proactor calls lib directly) -

    def submit(self) -> int:
        return self._raise_for(lib.ul_submit(self.ptr))

    def run(self, timeout_ns: int, must_enter: bool = True) -> int:
        return self._raise_for(lib.ul_run(self.ptr, timeout_ns, 1 if must_enter else 0))

    def stats(self) -> dict[str, int]:
        # The counters live next to the ring mappings, which are gone after
        # close() and after fork() (reading them would crash).
        self.check_usable()
        st = ffi.new("ul_stats *")
        lib.ul_ring_stats(self.ptr, st)
        return {name: getattr(st, name) for name in (
            "sqes_submitted", "cqes_reaped", "enters", "sq_full_flushes",
            "cq_overflow_flushes", "cq_overflow_kernel", "sq_pending")}

    # -- provided-buffer rings ------------------------------------------------

    def create_bufring(self, bgid: int, nbufs: int, buf_size: int,
                       provide: int | None = None) -> Any:
        """A provided-buffer ring of nbufs buffers; only the first ``provide``
        (default: all) go to the kernel now, the rest are the caller's."""
        out = ffi.new("ul_bufring **")
        self._raise_for(lib.ul_bufring_create_partial(
            self.ptr, bgid, nbufs, buf_size, nbufs if provide is None else provide, out))
        self._bufrings[bgid] = out[0]
        return out[0]

    def destroy_bufring(self, bgid: int) -> None:
        br = self._bufrings.pop(bgid)
        self._raise_for(lib.ul_bufring_destroy(br))

    # -- teardown ---------------------------------------------------------------

    def _fork_reset(self) -> None:
        if self.ptr != ffi.NULL and not self.closed:
            lib.ul_ring_fork_reset(self.ptr)
        self.forked = True

    def close(self) -> None:
        """Release the ring.  The caller has drained every operation.

        In a forked child this only drops the child's copies; it never talks
        to the kernel about the parent's ring.
        """
        if self.closed:
            return
        if not self.forked and self.pid != os.getpid():
            # Forked without our at-fork hook (a raw fork() from C): the fd and
            # mappings are still the parent's ring; unregistering a buffer ring
            # through them would pull it from under the parent.
            self._fork_reset()
        self.closed = True
        _live_rings.discard(self)
        if self.ptr == ffi.NULL:
            return
        if not self.forked:
            for bgid in list(self._bufrings):
                # Unregistering is only bookkeeping: closing the ring fd drops it too.
                lib.ul_bufring_destroy(self._bufrings.pop(bgid))
        lib.ul_ring_forget(self.ptr)
        self.ptr = ffi.NULL
