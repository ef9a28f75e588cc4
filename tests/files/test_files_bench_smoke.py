"""benchmarks/files.py still works: every implementation's data is checked, nothing timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.timeout(120)
def test_files_benchmark_verify_only(tmp_path: Path) -> None:
    out = tmp_path / "files.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.files", "--verify-only",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())["results"]
    assert len(results) == 4
    for cell, row in results.items():
        for impl in ("uringloop", "blocking"):
            assert len(row[impl]["rounds"]) == 1, (cell, impl)
        for impl in ("aiofiles/asyncio", "aiofiles/uringloop"):
            # aiofiles is a bench extra: checked where installed, else reported
            assert "rounds" in row[impl] or "not installed" in row[impl]["error"]
