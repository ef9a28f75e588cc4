"""``python -m uringloop doctor``: can uringloop run here, and if not, why not.

The doctor gathers what decides whether io_uring is usable -- kernel release,
the ``kernel.io_uring_disabled`` sysctl, the seccomp mode, RLIMIT_MEMLOCK --
then creates a real loop exactly as ``uringloop.new_event_loop()`` would and
runs one cross-thread wakeup through its ring.  A refusal is reported with
the same cause key and message ``UringUnavailableError`` carries; a usable
ring is described by its setup flags, kernel feature flags, probed operations
and the state of every optional feature (on, or off and why).

Everything is collected into a :class:`Report` first, so tests (and
``--json``) see the same facts the text shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno as _errno
import os
import platform
import resource
import sys
import textwrap
import threading
from collections.abc import Iterable
from typing import Any

from . import __version__, _ring
from ._loop import Loop

__all__ = ["FEATURE_KERNELS", "Report", "collect", "format_text"]

#: The kernel each optional feature needs (what doctor names when it is off).
FEATURE_KERNELS = {
    "defer_taskrun": "6.1",
    "coop_taskrun": "5.19",
    "submit_all": "5.18",
    "registered_ring_fd": "5.18",
    "recv_multishot": "6.0",
    "accept_multishot": "5.19",
    "buf_ring": "5.19",
    "poll_multishot": "5.13",
    "waitid": "6.7",
    "send_zc": "6.0",
    "splice": "5.7",
}

_SECCOMP_MODES = {0: "none", 1: "strict", 2: "filter"}
_SYSCTL_MEANINGS = {
    0: "io_uring allowed for every process",
    1: "io_uring only for CAP_SYS_ADMIN and kernel.io_uring_group",
    2: "io_uring disabled for every process",
}
# A guard against a ring that never completes anything, not a speed limit.
_SMOKE_TIMEOUT = 10.0


@dataclasses.dataclass
class Report:
    """Everything the doctor found; ``usable`` decides the exit code."""

    uringloop_version: str
    uringloop_path: str
    python_version: str
    python_implementation: str
    python_executable: str
    kernel_release: str
    machine: str
    usable: bool
    cause: str | None = None
    errno: str | None = None
    message: str | None = None
    io_uring_disabled: int | None = None
    io_uring_group: int | None = None
    seccomp: int | None = None
    memlock_soft: int | None = None      # bytes; None means unlimited
    memlock_hard: int | None = None
    env_disable: str | None = None
    env_fallback: str | None = None
    setup_flags: list[str] = dataclasses.field(default_factory=list)
    kernel_features: list[str] = dataclasses.field(default_factory=list)
    sq_entries: int | None = None
    cq_entries: int | None = None
    ops: list[str] = dataclasses.field(default_factory=list)
    ops_missing: list[str] = dataclasses.field(default_factory=list)
    optional_features: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (``--json``)."""
        return dataclasses.asdict(self)


def read_io_uring_group() -> int | None:
    """The ``kernel.io_uring_group`` sysctl (Linux 6.6+), or None."""
    try:
        with open("/proc/sys/kernel/io_uring_group") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _memlock() -> tuple[int | None, int | None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    return (None if soft == inf else soft, None if hard == inf else hard)


def _feature_state(name: str, features: _ring.Features, env_disabled: frozenset[str]
                   ) -> str:
    """'on', or 'off: <why>' for one optional feature of a working ring."""
    if getattr(features, name):
        return "on"
    if name in features.disabled:
        source = "URINGLOOP_DISABLE" if name in env_disabled else "Loop(disable=...)"
        return f"off: disabled by {source}"
    if name == "coop_taskrun" and features.defer_taskrun:
        return "off: not needed, DEFER_TASKRUN is in use"
    if name == "recv_multishot" and not features.buf_ring:
        return "off: needs buf_ring, which is off"
    return f"off: not supported by this kernel (needs Linux {FEATURE_KERNELS[name]})"


async def _smoke() -> str:
    # One cross-thread wakeup: the self-pipe read in flight on the ring has to
    # complete, so io_uring_enter really submits and reaps here.
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    t = threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, "ok"))
    t.start()
    try:
        return await asyncio.wait_for(fut, _SMOKE_TIMEOUT)
    finally:
        t.join()


def _refused(report: Report, exc: BaseException) -> Report:
    report.usable = False
    if isinstance(exc, _ring.UringUnavailableError):
        report.cause = exc.cause
        report.errno = _errno.errorcode.get(exc.errno or 0, str(exc.errno))
        report.message = str(exc)
    elif isinstance(exc, ValueError):
        report.cause = "config"
        report.message = f"uringloop is misconfigured here: {exc}"
    else:
        report.cause = "smoke-test"
        err = getattr(exc, "errno", None)
        report.errno = _errno.errorcode.get(err, None) if isinstance(err, int) else None
        report.message = (f"a ring was created but a first round trip through it failed: "
                          f"{type(exc).__name__}: {exc}")
    return report


def collect(disable: Iterable[str] = ()) -> Report:
    """Gather the facts and try a real loop, as ``new_event_loop()`` would.

    ``disable`` is passed to ``Loop(disable=...)``; ``URINGLOOP_DISABLE`` in the
    environment applies as well, as it does for every loop.
    """
    soft, hard = _memlock()
    uname = os.uname()
    report = Report(
        uringloop_version=__version__,
        uringloop_path=os.path.dirname(os.path.abspath(__file__)),
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        python_executable=sys.executable,
        kernel_release=uname.release,
        machine=uname.machine,
        usable=False,
        io_uring_disabled=_ring.read_sysctl_io_uring_disabled(),
        io_uring_group=read_io_uring_group(),
        seccomp=_ring.read_seccomp_mode(),
        memlock_soft=soft,
        memlock_hard=hard,
        env_disable=os.environ.get("URINGLOOP_DISABLE"),
        env_fallback=os.environ.get("URINGLOOP_FALLBACK"),
    )
    try:
        env_disabled = _ring._disabled_from_env()
        loop = Loop(disable=disable)
    except (_ring.UringUnavailableError, ValueError) as exc:
        return _refused(report, exc)
    try:
        features = loop.features
        loop.run_until_complete(_smoke())
    except Exception as exc:  # noqa: BLE001 - every failure is a finding here
        return _refused(report, exc)
    finally:
        loop.close()
    report.usable = True
    report.setup_flags = sorted(features.setup_flags)
    report.kernel_features = sorted(features.kernel_features)
    report.sq_entries = features.sq_entries
    report.cq_entries = features.cq_entries
    report.ops = sorted(features.ops)
    report.ops_missing = sorted(set(_ring.OPCODE_NAMES.values()) - features.ops)
    order = [f.name for f in dataclasses.fields(features) if f.name in _ring.OPTIONAL_FEATURES]
    report.optional_features = {n: _feature_state(n, features, env_disabled) for n in order}
    return report


# ---- text ---------------------------------------------------------------------

_WIDTH = 78
_LABEL = 28


def _row(label: str, value: str) -> str:
    indent = " " * (_LABEL + 2)
    first = f"  {label:<{_LABEL}}"
    return textwrap.fill(value or "-", _WIDTH, initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False)


def _bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"


def _sysctl_text(value: int | None) -> str:
    if value is None:
        return "absent (kernel before 6.6, or /proc/sys not visible): no restriction"
    return f"{value} ({_SYSCTL_MEANINGS.get(value, 'unknown value')})"


def _seccomp_text(mode: int | None) -> str:
    if mode is None:
        return "unknown (/proc/self/status unreadable)"
    text = f"{mode} ({_SECCOMP_MODES.get(mode, 'unknown')})"
    if mode == 2:
        text += "; container runtimes' default profiles block io_uring"
    return text


def format_text(report: Report) -> str:
    """The human-readable doctor report."""
    lines = ["uringloop doctor", ""]
    lines.append(_row("uringloop", f"{report.uringloop_version} ({report.uringloop_path})"))
    lines.append(_row("Python", f"{report.python_version} {report.python_implementation} "
                                f"({report.python_executable})"))
    lines.append(_row("kernel", f"Linux {report.kernel_release} {report.machine}"))
    lines.append("")
    if report.usable:
        lines.append("io_uring: usable -- uringloop.new_event_loop() will return a uringloop Loop")
    else:
        lines.append("io_uring: NOT USABLE -- uringloop.new_event_loop() raises "
                     "UringUnavailableError")
        cause = report.cause or "?"
        lines.append(_row("cause", f"{cause} ({report.errno})" if report.errno else cause))
        lines.append(_row("explanation", report.message or ""))
    lines += ["", "Environment"]
    lines.append(_row("kernel.io_uring_disabled", _sysctl_text(report.io_uring_disabled)))
    if report.io_uring_group is not None:
        lines.append(_row("kernel.io_uring_group", str(report.io_uring_group)))
    lines.append(_row("seccomp", _seccomp_text(report.seccomp)))
    lines.append(_row("RLIMIT_MEMLOCK",
                      f"soft {_bytes(report.memlock_soft)}, hard {_bytes(report.memlock_hard)} "
                      "(charged for rings only before Linux 5.12)"))
    lines.append(_row("URINGLOOP_DISABLE",
                      "(unset)" if report.env_disable is None else repr(report.env_disable)))
    fallback = report.env_fallback
    lines.append(_row("URINGLOOP_FALLBACK",
                      "(unset): a refusal raises" if fallback is None else
                      f"{fallback!r}: " + ("a refusal falls back to the stock loop, with a "
                                          "warning" if fallback not in ("", "0")
                                          else "a refusal raises")))
    if report.usable:
        lines += ["", "Ring"]
        lines.append(_row("setup flags", " ".join(report.setup_flags) or "(none)"))
        lines.append(_row("kernel features", " ".join(report.kernel_features)))
        lines.append(_row("entries", f"SQ {report.sq_entries}, CQ {report.cq_entries}"))
        known = len(report.ops) + len(report.ops_missing)
        lines.append(_row(f"operations ({len(report.ops)} of {known})", " ".join(report.ops)))
        lines.append(_row("not supported", " ".join(report.ops_missing) or "(none)"))
        lines += ["", "Optional features"]
        for name, state in report.optional_features.items():
            lines.append(_row(name, state))
    return "\n".join(lines) + "\n"
