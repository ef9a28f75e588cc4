"""cffi build script for uringloop's C core (out-of-line API mode).

``ffibuilder`` is referenced from ``_build/setup.py`` (``cffi_modules``);
the result is the extension ``uringloop._ring_cffi``, imported only by
``uringloop/_ring.py``.

Set ``URINGLOOP_DEBUG_BUILD=1`` to compile with AddressSanitizer and
UndefinedBehaviorSanitizer (run Python with ``LD_PRELOAD`` of libasan then).
"""

from __future__ import annotations

import os
import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

_WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]


def _compile_args() -> list[str]:
    # The warnings also cover cffi's generated wrapper (checked clean on
    # 3.11-3.13), so an ABI mismatch between cdef.h and ul_ring.h is an error.
    args = ["-std=gnu11", "-O2", *_WARNINGS]
    if os.environ.get("URINGLOOP_DEBUG_BUILD"):
        args = ["-std=gnu11", "-O1", "-g", "-fno-omit-frame-pointer",
                "-fsanitize=address,undefined", "-DUL_DEBUG=1", *_WARNINGS]
    return args


# cffi releases the GIL around every call it generates.  For the ring's
# calls that is pure cost: they never block (preparing an SQE, recycling a
# buffer) -- except ul_run() with a timeout, which sleeps in io_uring_enter.
# So the generated wrappers keep the GIL, and ul_run() releases it itself,
# only when it may sleep.  (Measured: ~4% of the user instructions of a
# 1 KiB echo round trip went to the GIL hand-offs of the non-blocking calls.)
_PREAMBLE = r"""
#include "ul_ring.h"

static int ul_run_releasing(ul_ring *r, int64_t timeout_ns, int must_enter)
{
    if (timeout_ns == 0)
        return ul_run(r, timeout_ns, must_enter);
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = ul_run(r, timeout_ns, must_enter);
    Py_END_ALLOW_THREADS
    return ret;
}
#define ul_run(r, t, m) ul_run_releasing(r, t, m)

static int ul_run_recycle_releasing(ul_ring *r, int64_t timeout_ns, int must_enter,
                                    ul_bufring *br, const uint16_t *bids, unsigned n)
{
    if (timeout_ns == 0)
        return ul_run_recycle(r, timeout_ns, must_enter, br, bids, n);
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = ul_run_recycle(r, timeout_ns, must_enter, br, bids, n);
    Py_END_ALLOW_THREADS
    return ret;
}
#define ul_run_recycle(r, t, m, b, p, n) ul_run_recycle_releasing(r, t, m, b, p, n)

#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef((HERE / "cdef.h").read_text())
ffibuilder.set_source(
    "uringloop._ring_cffi",
    _PREAMBLE,
    # Relative to the project root: setuptools refuses absolute source paths.
    sources=[os.path.relpath(CSRC / "ring.c", HERE.parent)],
    include_dirs=[str(CSRC)],
    extra_compile_args=_compile_args(),
    extra_link_args=(["-fsanitize=address,undefined"]
                     if os.environ.get("URINGLOOP_DEBUG_BUILD") else []),
)


# uringloop._speedups: a plain CPython extension for the per-iteration and
# per-message mechanics (see speedups.c); it links the same ring.c.
def _speedups() -> "Extension":
    from setuptools import Extension
    root = HERE.parent
    return Extension(
        "uringloop._speedups",
        sources=[os.path.relpath(CSRC / "speedups.c", root),
                 os.path.relpath(CSRC / "ring.c", root)],
        include_dirs=[os.path.relpath(CSRC, root)],
        extra_compile_args=_compile_args(),
        extra_link_args=(["-fsanitize=address,undefined"]
                         if os.environ.get("URINGLOOP_DEBUG_BUILD") else []),
    )


SPEEDUPS = _speedups()


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
