"""Build the C tools (load generator, reference server) into benchmarks/build/.

benchmarks/build/ is git-ignored (the top-level ``build/`` pattern).  A tool
is rebuilt when its source is newer; the binary is written under a temporary
name and renamed, so concurrent runs never see half a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
SOURCES = {"client": HERE / "c" / "client.c", "echo_server": HERE / "c" / "echo_server.c"}
CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


class BuildError(RuntimeError):
    pass


def build_tools() -> dict[str, Path]:
    """Compile what is missing or stale; return {tool name: binary path}."""
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise BuildError(f"no C compiler ({cc!r} not found; set CC)")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tools = {}
    for name, src in SOURCES.items():
        out = BUILD_DIR / name
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
            proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(src)],
                                  check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise BuildError(f"{cc} failed on {src.name}:\n{proc.stderr.strip()}")
            os.replace(tmp, out)
        tools[name] = out
    return tools
