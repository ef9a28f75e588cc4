"""The benchmark suite still works: every server answers correctly, nothing is timed.

Runs ``python -m benchmarks --verify-only``: each network cell on stock
asyncio and on the C reference server (a few requests per connection, every
byte or HTTP status/length checked by the C client), and each loop-heart
micro-benchmark for one checked batch on uringloop.  No timing
is asserted anywhere; speed lives in benchmarks/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import uringloop

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None,
                                reason="no C compiler to build the benchmark client")


def verify(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "verify.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--verify-only",
                           "--json", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    results: dict[str, Any] = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results


def test_network_servers_answer_correctly(tmp_path: Path) -> None:
    results = verify(tmp_path, "--only", "net", "--loops", "asyncio,c")
    assert len(results["net"]) >= 18
    for entry in results["net"]:
        for loop, summary in entry["summary"].items():
            if summary["verified"] is None:  # only a missing aiohttp/httptools excuses it
                assert all(e.endswith("not installed") for e in summary["errors"]), \
                    (entry["name"], loop, summary["errors"])
                assert entry["mode"] == "http" and loop != "c"
            else:
                assert summary["verified"] >= entry["conns"], (entry["name"], loop)


def test_heart_micro_benchmarks_run_on_uringloop(tmp_path: Path) -> None:
    try:
        uringloop.Loop().close()
    except uringloop.UringUnavailableError as exc:  # pragma: no cover - depends on host
        pytest.skip(f"io_uring unavailable: {exc}")
    results = verify(tmp_path, "--only", "micro", "--loops", "uringloop")
    assert [e["name"] for e in results["micro"]]
    for entry in results["micro"]:
        for loop, summary in entry["summary"].items():
            assert summary["verified"], (entry["name"], loop, summary["errors"])
