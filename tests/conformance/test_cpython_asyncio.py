"""CPython's own asyncio test suite, run against uringloop with stock asyncio as the oracle.

For each module of ``test.test_asyncio`` in ``MODULES``: every test that
passes on stock asyncio must pass on uringloop, unless ``exclusions.py``
lists it with a reason.  An excluded test that passes fails this test too
(the list must stay honest), and so does a run that crashed, timed out or
ran nothing.  See docs/conformance.md.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

import uringloop

from .harness import MODULES, RUN_TIMEOUT, run_and_compare

VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _uring_unavailable() -> str | None:
    try:
        uringloop.Loop().close()
    except uringloop.UringUnavailableError as exc:  # pragma: no cover - host dependent
        return str(exc)
    return None


@pytest.mark.cpython
@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
@pytest.mark.parametrize("module", MODULES)
def test_cpython_asyncio_module(module: str) -> None:
    first = MODULES[module]
    if sys.version_info < first:
        pytest.skip(f"test.test_asyncio.{module} first shipped with Python "
                    f"{first[0]}.{first[1]}")
    if importlib.util.find_spec("test.test_asyncio") is None:  # pragma: no cover
        pytest.skip("this Python was installed without its test suite (test.test_asyncio)")
    if importlib.util.find_spec(f"test.test_asyncio.{module}") is None:
        pytest.fail(f"test.test_asyncio.{module} does not exist on Python {VERSION}: "
                    "give it the right first version in harness.MODULES")
    unavailable = _uring_unavailable()
    if unavailable is not None:  # pragma: no cover - host dependent
        pytest.skip(f"io_uring unavailable: {unavailable}")
    cmp = run_and_compare(module, version=VERSION)
    print(cmp.report(verbose=True))
    if not cmp.ok:
        pytest.fail(cmp.report(), pytrace=False)
