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


ffibuilder = cffi.FFI()
ffibuilder.cdef((HERE / "cdef.h").read_text())
ffibuilder.set_source(
    "uringloop._ring_cffi",
    '#include "ul_ring.h"\n',
    # Relative to the project root: setuptools refuses absolute source paths.
    sources=[os.path.relpath(CSRC / "ring.c", HERE.parent)],
    include_dirs=[str(CSRC)],
    extra_compile_args=_compile_args(),
    extra_link_args=(["-fsanitize=address,undefined"]
                     if os.environ.get("URINGLOOP_DEBUG_BUILD") else []),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
