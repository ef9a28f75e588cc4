"""When the kernel says no: one clear exception, an opt-in fallback, a doctor that explains.

Every refusal is simulated without a broken kernel: ``_ring._create_ring``
(one io_uring_setup attempt) is replaced by a fake kernel that answers with an
errno, or that hides feature flags; the sysctl and seccomp readers are
replaced to set the scene.  A few tests go further and make this very kernel
refuse, with a real seccomp filter installed in a subprocess.

Also here: every optional feature can be forced off (``URINGLOOP_DISABLE``,
``Loop(disable=...)``), shows so in ``loop.features``, and the loop still
works on the fallback path.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pickle
import platform
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import uringloop
from uringloop import _doctor, _ring
from uringloop.__main__ import main as cli_main

# A guard against a lost wakeup, not a timing assertion.
GUARD = 30.0

SETUP = _ring.lib
DEFER = SETUP.UL_SETUP_DEFER_TASKRUN
COOP = SETUP.UL_SETUP_COOP_TASKRUN
SUBMIT_ALL = SETUP.UL_SETUP_SUBMIT_ALL


# ---------------------------------------------------------------------------
# a fake kernel


class FakeKernel:
    """Stands in for io_uring_setup: ``answer(flags)`` gives an errno (refuse) or 0.

    Accepted setups go to the real kernel, so a ring created through the fake
    is a real, working ring.  ``attempts`` records the flags of every call.
    """

    def __init__(self, answer: Callable[[int], int], hide_features: int = 0) -> None:
        self.answer = answer
        self.hide_features = hide_features
        self.attempts: list[int] = []
        self._real = _ring._create_ring

    def __call__(self, sq: int, cq: int, flags: int) -> tuple[Any, Any, int]:
        self.attempts.append(flags)
        err = self.answer(flags)
        if err:
            return _ring.ffi.NULL, _ring.ffi.new("ul_info *"), -err
        ptr, info, ret = self._real(sq, cq, flags)
        if ret == 0 and self.hide_features:
            info.features &= ~self.hide_features   # a kernel without them
        return ptr, info, ret


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeKernel]:
    """install(answer, sysctl=None, seccomp=0, hide_features=0) -> the FakeKernel."""
    monkeypatch.delenv("URINGLOOP_FALLBACK", raising=False)
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)

    def install(answer: Callable[[int], int] | int, *, sysctl: int | None = None,
                seccomp: int | None = 0, hide_features: int = 0) -> FakeKernel:
        fn = answer if callable(answer) else (lambda flags, e=answer: e)
        fake = FakeKernel(fn, hide_features)
        monkeypatch.setattr(_ring, "_create_ring", fake)
        monkeypatch.setattr(_ring, "read_sysctl_io_uring_disabled", lambda: sysctl)
        monkeypatch.setattr(_ring, "read_seccomp_mode", lambda: seccomp)
        return fake
    return install


@pytest.fixture
def fresh_fallback_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if no fallback had warned yet in this process."""
    monkeypatch.setattr(uringloop, "_fallback_warned", False)


async def _roundtrip() -> tuple[bytes, str]:
    """Real work: a loopback TCP echo through streams, and a cross-thread wakeup."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"hello")
        data = await reader.readexactly(5)
        writer.close()
        await writer.wait_closed()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    t = threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, "woken"))
    t.start()
    try:
        woken = await asyncio.wait_for(fut, GUARD)
    finally:
        t.join()
    return data, woken


def assert_works(loop: asyncio.AbstractEventLoop) -> None:
    try:
        assert loop.run_until_complete(asyncio.wait_for(_roundtrip(), GUARD)) == \
            (b"hello", "woken")
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# each refusal: the exception


REFUSALS = {
    # id: (errno, sysctl, seccomp, cause, phrases the message must contain)
    "enosys": (errno.ENOSYS, None, 0, "no-kernel-support",
               ["ENOSYS", "CONFIG_IO_URING", "Fix:", "Linux 5.19"]),
    "enosys-under-seccomp": (errno.ENOSYS, None, 2, "no-kernel-support",
                             ["ENOSYS", "seccomp filter is active", "Fix:"]),
    "eperm-seccomp": (errno.EPERM, 0, 2, "seccomp",
                      ["EPERM", "Seccomp: 2", "seccomp profile", "io_uring_setup",
                       "io_uring_enter", "io_uring_register", "docs/operations.md", "Fix:"]),
    "eperm-no-sysctl": (errno.EPERM, None, 0, "seccomp",
                        ["EPERM", "seccomp profile", "Fix:"]),
    "sysctl-2": (errno.EPERM, 2, 0, "sysctl-disabled",
                 ["kernel.io_uring_disabled=2", "sysctl -w kernel.io_uring_disabled=0",
                  "Fix:"]),
    "sysctl-1": (errno.EPERM, 1, 0, "sysctl-group",
                 ["kernel.io_uring_disabled=1", "kernel.io_uring_group", "Fix:"]),
    "enomem-memlock": (errno.ENOMEM, None, 0, "memlock",
                       ["ENOMEM", "RLIMIT_MEMLOCK", "5.12", "ulimit -l", "LimitMEMLOCK=",
                        "Fix:"]),
    "emfile": (errno.EMFILE, None, 0, "other", ["EMFILE", "doctor"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_raises_one_clear_error(kernel: Callable[..., FakeKernel], case: str) -> None:
    err, sysctl, seccomp, cause, phrases = REFUSALS[case]
    fake = kernel(err, sysctl=sysctl, seccomp=seccomp)
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    exc = info.value
    assert isinstance(exc, OSError)
    assert exc.errno == err
    assert exc.cause == cause
    for phrase in phrases:
        assert phrase in str(exc), (phrase, str(exc))
    assert "fallback=True" in str(exc)       # the way out is always named
    # A refusal (not an unknown flag) stops the setup ladder at once.
    assert len(fake.attempts) == 1
    # Loop() directly refuses the same way.
    with pytest.raises(uringloop.UringUnavailableError) as again:
        uringloop.Loop()
    assert (again.value.errno, again.value.cause) == (err, cause)


def test_refusal_pickles_with_its_cause(kernel: Callable[..., FakeKernel]) -> None:
    kernel(errno.EPERM, sysctl=2)
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is uringloop.UringUnavailableError
    assert (clone.errno, clone.cause, str(clone)) == \
        (info.value.errno, info.value.cause, str(info.value))


@pytest.mark.parametrize("hidden,name", [
    (_ring.FEAT_EXT_ARG, "EXT_ARG"),
    (_ring.FEAT_NODROP, "NODROP"),
    (_ring.FEAT_EXT_ARG | _ring.FEAT_NODROP, "NODROP, EXT_ARG"),
])
def test_kernel_without_required_features(kernel: Callable[..., FakeKernel],
                                          hidden: int, name: str) -> None:
    # The ring is really created, then refused: its fd must not leak (the
    # conftest teardown counts fds).
    kernel(0, hide_features=hidden)
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    exc = info.value
    assert exc.errno == errno.ENOSYS
    assert exc.cause == "missing-feature"
    assert f"lacks {name}" in str(exc)
    assert "Linux 5.11" in str(exc) and "Fix:" in str(exc)
    assert _ring.missing_required_features(_ring.FEAT_NODROP | _ring.FEAT_EXT_ARG) == []


class _LibWith:
    """The cffi lib, with some functions replaced (cffi lib objects are read-only)."""

    def __init__(self, **replace: Any) -> None:
        self._replace = replace

    def __getattr__(self, name: str) -> Any:
        return self._replace.get(name) or getattr(SETUP, name)


@pytest.mark.parametrize("call,err,cause", [
    ("ul_probe", errno.EPERM, "seccomp"),      # io_uring_register refused
    ("ul_run", errno.EPERM, "seccomp"),        # io_uring_enter refused
    ("ul_probe", errno.EINVAL, "missing-feature"),   # no IORING_REGISTER_PROBE (< 5.6)
])
def test_setup_allowed_but_ring_unusable(kernel: Callable[..., FakeKernel],
                                         monkeypatch: pytest.MonkeyPatch,
                                         call: str, err: int, cause: str) -> None:
    kernel(0, seccomp=2)
    monkeypatch.setattr(_ring, "lib", _LibWith(**{call: lambda *a: -err}))
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    assert info.value.cause == cause
    if cause == "seccomp":
        syscall = {"ul_probe": "io_uring_register", "ul_run": "io_uring_enter"}[call]
        assert f"EPERM from {syscall}" in str(info.value)
        assert f"{syscall} was refused" in str(info.value)
    else:
        assert "IORING_REGISTER_PROBE" in str(info.value)


# ---------------------------------------------------------------------------
# the EINVAL ladder: unknown setup flags step down, the ring still gets made


def test_einval_steps_down_to_coop_taskrun(kernel: Callable[..., FakeKernel]) -> None:
    # A 5.19 kernel: no SINGLE_ISSUER/DEFER_TASKRUN yet.
    fake = kernel(lambda flags: errno.EINVAL if flags & DEFER else 0)
    loop = uringloop.new_event_loop()
    assert isinstance(loop, uringloop.Loop)
    assert len(fake.attempts) == 2 and fake.attempts[1] & COOP
    f = loop.features
    assert f.setup_flags == {"COOP_TASKRUN", "TASKRUN_FLAG", "SUBMIT_ALL"}
    assert (f.defer_taskrun, f.coop_taskrun, f.submit_all) == (False, True, True)
    assert_works(loop)


def test_einval_steps_down_to_submit_all(kernel: Callable[..., FakeKernel]) -> None:
    # A 5.18 kernel: SUBMIT_ALL but no task-run flags.
    fake = kernel(lambda flags: errno.EINVAL if flags & ~SUBMIT_ALL else 0)
    loop = uringloop.new_event_loop()
    assert fake.attempts[-1] == SUBMIT_ALL and len(fake.attempts) == 3
    assert loop.features.setup_flags == {"SUBMIT_ALL"}
    assert (loop.features.defer_taskrun, loop.features.coop_taskrun) == (False, False)
    assert_works(loop)


def test_einval_steps_down_to_no_flags(kernel: Callable[..., FakeKernel]) -> None:
    # A 5.11 .. 5.17 kernel: none of the optional setup flags.
    fake = kernel(lambda flags: errno.EINVAL if flags else 0)
    loop = uringloop.new_event_loop()
    assert fake.attempts[-1] == 0 and len(fake.attempts) == 4
    assert loop.features.setup_flags == frozenset()
    assert not loop.features.submit_all
    assert_works(loop)


def test_einval_everywhere_is_a_refusal(kernel: Callable[..., FakeKernel]) -> None:
    fake = kernel(errno.EINVAL)
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    assert len(fake.attempts) == 4
    assert (info.value.errno, info.value.cause) == (errno.EINVAL, "other")


def test_refusal_after_einval_stops_the_ladder(kernel: Callable[..., FakeKernel]) -> None:
    fake = kernel(lambda flags: errno.EINVAL if flags & DEFER else errno.ENOMEM)
    with pytest.raises(uringloop.UringUnavailableError) as info:
        uringloop.new_event_loop()
    assert len(fake.attempts) == 2
    assert info.value.cause == "memlock"


# ---------------------------------------------------------------------------
# the fallback: only on request, warns once per process


def test_no_fallback_unless_asked(kernel: Callable[..., FakeKernel],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kernel(errno.EPERM, seccomp=2)
    for value in ("", "0"):
        monkeypatch.setenv("URINGLOOP_FALLBACK", value)
        with pytest.raises(uringloop.UringUnavailableError):
            uringloop.new_event_loop()
    monkeypatch.setenv("URINGLOOP_FALLBACK", "1")
    with pytest.raises(uringloop.UringUnavailableError):
        uringloop.new_event_loop(fallback=False)   # the argument wins over the env


def test_fallback_argument_warns_once(kernel: Callable[..., FakeKernel],
                                      fresh_fallback_warning: None) -> None:
    kernel(errno.EPERM, seccomp=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loops = [uringloop.new_event_loop(fallback=True) for _ in range(3)]
    try:
        assert [type(w.message) for w in caught] == [RuntimeWarning]
        text = str(caught[0].message)
        assert "falling back to the stock asyncio loop" in text
        assert "seccomp" in text                  # the cause travels with the warning
        assert caught[0].filename == __file__     # points at the caller
        for loop in loops:
            assert not isinstance(loop, uringloop.Loop)
            assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        for loop in loops:
            loop.close()
    assert_works(uringloop.new_event_loop(fallback=True))   # no second warning (error)


def test_fallback_env_warns_once(kernel: Callable[..., FakeKernel],
                                 monkeypatch: pytest.MonkeyPatch,
                                 fresh_fallback_warning: None) -> None:
    kernel(errno.ENOSYS)
    monkeypatch.setenv("URINGLOOP_FALLBACK", "1")
    with pytest.warns(RuntimeWarning, match="no-kernel-support|has no io_uring"):
        loop = uringloop.new_event_loop()
    assert not isinstance(loop, uringloop.Loop)
    assert_works(loop)
    # Every entry point goes through new_event_loop(): no further warning.
    assert_works(uringloop.EventLoopPolicy().new_event_loop())
    assert uringloop.run(asyncio.sleep(0, "ran")) == "ran"
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
        assert not isinstance(runner.get_loop(), uringloop.Loop)


def test_fallback_never_chosen_when_io_uring_works(monkeypatch: pytest.MonkeyPatch,
                                                    fresh_fallback_warning: None) -> None:
    monkeypatch.setenv("URINGLOOP_FALLBACK", "1")
    loop = uringloop.new_event_loop(fallback=True)   # no warning (warnings are errors)
    assert isinstance(loop, uringloop.Loop)
    loop.close()
    assert uringloop._fallback_warned is False


def test_config_errors_are_not_masked_by_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", "no_such_feature")
    with pytest.raises(ValueError, match="no_such_feature"):
        uringloop.new_event_loop(fallback=True)


# ---------------------------------------------------------------------------
# forcing optional features off


@pytest.mark.parametrize("name", sorted(_ring.OPTIONAL_FEATURES))
@pytest.mark.parametrize("how", ["env", "argument"])
def test_force_feature_off(monkeypatch: pytest.MonkeyPatch, name: str, how: str) -> None:
    if how == "env":
        monkeypatch.setenv("URINGLOOP_DISABLE", f" {name} ,")
        loop = uringloop.new_event_loop()
    else:
        monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
        loop = uringloop.Loop(disable=[name])
    f = loop.features
    assert getattr(f, name) is False
    assert f.disabled == {name}
    if name == "buf_ring":
        assert f.recv_multishot is False           # multishot recv needs buffer rings
    if name == "defer_taskrun":
        assert "SINGLE_ISSUER" not in f.setup_flags and "DEFER_TASKRUN" not in f.setup_flags
    assert_works(loop)                             # the fallback path does real work


def test_force_all_features_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", ",".join(sorted(_ring.OPTIONAL_FEATURES)))
    loop = uringloop.new_event_loop()
    f = loop.features
    assert f.disabled == _ring.OPTIONAL_FEATURES
    assert not any(getattr(f, n) for n in _ring.OPTIONAL_FEATURES)
    assert f.setup_flags == frozenset()
    assert_works(loop)


def test_env_and_argument_combine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", "send_zc")
    loop = uringloop.Loop(disable={"waitid"})
    try:
        assert loop.features.disabled == {"send_zc", "waitid"}
    finally:
        loop.close()


def _default_features() -> _ring.Features:
    loop = uringloop.Loop()
    try:
        return loop.features
    finally:
        loop.close()


@pytest.mark.parametrize("off,kept", [
    ("submit_all", "defer_taskrun"),
    ("coop_taskrun", "defer_taskrun"),
    ("defer_taskrun", "coop_taskrun"),
    ("defer_taskrun", "submit_all"),
    ("send_zc", "recv_multishot"),
])
def test_disabling_one_feature_keeps_the_others(monkeypatch: pytest.MonkeyPatch,
                                                off: str, kept: str) -> None:
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    if off == "defer_taskrun" and kept == "coop_taskrun":
        # coop_taskrun is what the ladder falls back to: probe for it directly.
        probe = uringloop.Loop(disable={"defer_taskrun"})
        supported = probe.features.coop_taskrun
        probe.close()
        if not supported:
            pytest.skip("this kernel has no COOP_TASKRUN (needs Linux 5.19)")
    elif not getattr(_default_features(), kept):
        pytest.skip(f"this kernel has no {kept} "
                    f"(needs Linux {_doctor.FEATURE_KERNELS[kept]})")
    loop = uringloop.Loop(disable={off})
    try:
        assert getattr(loop.features, off) is False
        assert getattr(loop.features, kept) is True
    finally:
        loop.close()


def test_unknown_feature_names_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    with pytest.raises(ValueError, match="bogus"):
        uringloop.Loop(disable=["bogus"])
    with pytest.raises(ValueError):
        uringloop.Loop(disable="buf_ring")   # a str is an iterable of letters: refused
    monkeypatch.setenv("URINGLOOP_DISABLE", "buf_ring,bogus")
    with pytest.raises(ValueError, match=r"bogus.*known: \[") as info:
        uringloop.new_event_loop()
    assert "buf_ring" in str(info.value)        # the known names are listed


# ---------------------------------------------------------------------------
# the doctor explains each refusal (in-process)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli_main(list(argv))
    return code, capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_doctor_explains_refusal(kernel: Callable[..., FakeKernel],
                                 capsys: pytest.CaptureFixture[str], case: str) -> None:
    err, sysctl, seccomp, cause, phrases = REFUSALS[case]
    kernel(err, sysctl=sysctl, seccomp=seccomp)
    report = _doctor.collect()
    assert report.usable is False
    assert report.cause == cause
    assert report.errno == errno.errorcode[err]
    assert report.io_uring_disabled == sysctl and report.seccomp == seccomp

    code, out = run_cli(capsys, "doctor")
    assert code == 1
    assert "NOT USABLE" in out
    assert f"{cause} ({errno.errorcode[err]})" in out
    flat = " ".join(out.split())                 # the text is wrapped
    for phrase in phrases:
        assert phrase in flat, phrase
    assert os.uname().release in out
    if sysctl is not None:
        assert f"kernel.io_uring_disabled {sysctl} (" in flat
    if seccomp == 2:
        assert "seccomp 2 (filter)" in flat

    code, out = run_cli(capsys, "doctor", "--json")
    data = json.loads(out)
    assert code == 1
    assert (data["usable"], data["cause"], data["errno"]) == \
        (False, cause, errno.errorcode[err])
    assert data["message"] == report.message


def test_doctor_explains_missing_features(kernel: Callable[..., FakeKernel],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    kernel(0, hide_features=_ring.FEAT_EXT_ARG)
    code, out = run_cli(capsys, "doctor")
    assert code == 1
    assert "missing-feature (ENOSYS)" in out
    assert "lacks EXT_ARG" in " ".join(out.split())


def test_doctor_shows_stepped_down_flags(kernel: Callable[..., FakeKernel],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    kernel(lambda flags: errno.EINVAL if flags & DEFER else 0)
    report = _doctor.collect()
    assert report.usable
    assert report.setup_flags == ["COOP_TASKRUN", "SUBMIT_ALL", "TASKRUN_FLAG"]
    assert report.optional_features["coop_taskrun"] == "on"
    assert report.optional_features["defer_taskrun"] == \
        "off: not supported by this kernel (needs Linux 6.1)"
    code, out = run_cli(capsys, "doctor")
    assert code == 0
    assert "COOP_TASKRUN SUBMIT_ALL TASKRUN_FLAG" in out


def test_doctor_shows_disabled_features(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", "buf_ring,send_zc")
    report = _doctor.collect(disable={"waitid"})
    assert report.usable
    states = report.optional_features
    assert set(states) == _ring.OPTIONAL_FEATURES
    assert states["buf_ring"] == "off: disabled by URINGLOOP_DISABLE"
    assert states["send_zc"] == "off: disabled by URINGLOOP_DISABLE"
    assert states["waitid"] == "off: disabled by Loop(disable=...)"
    assert states["recv_multishot"] == "off: needs buf_ring, which is off"
    code, out = run_cli(capsys, "doctor")
    assert code == 0
    assert "URINGLOOP_DISABLE" in out and "'buf_ring,send_zc'" in out


def test_doctor_reports_bad_configuration(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("URINGLOOP_DISABLE", "bogus")
    code, out = run_cli(capsys, "doctor")
    assert code == 1
    assert "config" in out and "bogus" in out


def test_doctor_reports_a_failed_round_trip(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    async def broken() -> str:
        raise OSError(errno.EIO, "simulated")

    monkeypatch.setattr(_doctor, "_smoke", broken)
    report = _doctor.collect()
    assert (report.usable, report.cause, report.errno) == (False, "smoke-test", "EIO")
    assert "simulated" in (report.message or "")


# ---------------------------------------------------------------------------
# this kernel, really refusing: a seccomp filter in a subprocess

# Installs a seccomp filter that answers one syscall with an errno, then runs
# the rest of the script.  io_uring_setup/enter/register are 425/426/427 in
# the unified syscall table (x86-64, arm64, ...).
_SECCOMP_PRELUDE = textwrap.dedent("""
    import ctypes, struct, sys
    def refuse_syscall(nr, err):
        libc = ctypes.CDLL(None, use_errno=True)
        prog = [(0x20, 0, 0, 0),                 # A = seccomp_data.nr
                (0x15, 0, 1, nr),                # if A == nr
                (0x06, 0, 0, 0x00050000 | err),  #   return SECCOMP_RET_ERRNO | err
                (0x06, 0, 0, 0x7fff0000)]        # return SECCOMP_RET_ALLOW
        code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fprog = SockFprog(len(prog), ctypes.cast(code, ctypes.c_void_p))
        if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
            print("SECCOMP-UNAVAILABLE", ctypes.get_errno())
            sys.exit(77)
""")
SYSCALLS = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}


def run_under_seccomp(syscall: str, err: int, body: str,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"io_uring syscall numbers not checked for {platform.machine()}")
    script = _SECCOMP_PRELUDE + f"refuse_syscall({SYSCALLS[syscall]}, {err})\n" + \
        textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    if proc.returncode == 77 and "SECCOMP-UNAVAILABLE" in proc.stdout:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stdout.strip()}")
    return proc


@pytest.mark.parametrize("syscall", sorted(SYSCALLS))
def test_real_seccomp_refusal(syscall: str) -> None:
    proc = run_under_seccomp(syscall, errno.EPERM, """
        import json, uringloop
        try:
            uringloop.new_event_loop()
        except uringloop.UringUnavailableError as exc:
            print(json.dumps({"errno": exc.errno, "cause": exc.cause, "msg": str(exc)}))
    """)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["errno"] == errno.EPERM
    assert result["cause"] == "seccomp"
    assert f"EPERM from {syscall}" in result["msg"]
    assert "Seccomp: 2" in result["msg"]


def test_real_seccomp_enosys() -> None:
    proc = run_under_seccomp("io_uring_setup", errno.ENOSYS, """
        import uringloop
        try:
            uringloop.new_event_loop()
        except uringloop.UringUnavailableError as exc:
            print(exc.cause, exc.errno)
    """)
    assert proc.stdout.split() == ["no-kernel-support", str(errno.ENOSYS)], proc.stderr


def test_real_doctor_under_seccomp() -> None:
    proc = run_under_seccomp("io_uring_setup", errno.EPERM, """
        import runpy
        sys.argv = ["uringloop", "doctor"]
        runpy.run_module("uringloop", run_name="__main__")
    """)
    assert proc.returncode == 1, proc.stderr
    assert "NOT USABLE" in proc.stdout
    assert "seccomp (EPERM)" in proc.stdout
    assert "seccomp 2 (filter)" in " ".join(proc.stdout.split())


def test_real_fallback_warns_once_per_process() -> None:
    proc = run_under_seccomp("io_uring_setup", errno.EPERM, """
        import asyncio, uringloop
        loops = [uringloop.new_event_loop() for _ in range(3)]
        print(sorted({type(lp).__name__ for lp in loops}))
        print(uringloop.run(asyncio.sleep(0, "ran")))
        for lp in loops:
            lp.close()
    """, env={"URINGLOOP_FALLBACK": "1", "PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["['_UnixSelectorEventLoop']", "ran"]
    assert proc.stderr.count("RuntimeWarning") == 1, proc.stderr
    assert "falling back to the stock asyncio loop" in proc.stderr


def test_real_doctor_on_this_machine() -> None:
    """One real `python -m uringloop doctor` run, here (io_uring works on the test host)."""
    if _default_refusal() is not None:
        pytest.skip(f"io_uring unavailable here: {_default_refusal()}")
    proc = subprocess.run([sys.executable, "-m", "uringloop", "doctor"], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "io_uring: usable" in out
    assert f"Linux {os.uname().release}" in out
    assert platform.python_version() in out
    assert f"{uringloop.__version__} (" in out
    for section in ("Environment", "Ring", "Optional features", "setup flags",
                    "kernel features", "operations", "RLIMIT_MEMLOCK",
                    "kernel.io_uring_disabled", "seccomp"):
        assert section in out, section
    proc = subprocess.run([sys.executable, "-m", "uringloop", "doctor", "--json"],
                          check=False, capture_output=True, text=True, timeout=120)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["usable"] is True
    assert "NODROP" in data["kernel_features"] and "EXT_ARG" in data["kernel_features"]
    assert "nop" in data["ops"] and set(data["optional_features"]) == _ring.OPTIONAL_FEATURES


def _default_refusal() -> str | None:
    try:
        uringloop.Loop().close()
    except uringloop.UringUnavailableError as exc:
        return str(exc)
    return None

