"""Reliability suite options.

``--soak`` (or ``URINGLOOP_SOAK=1``) runs the soak test for minutes instead of
the default 3 short rounds; ``URINGLOOP_SOAK_SECONDS`` sets how long (180).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the reliability soak for minutes (default: 3 short rounds)")


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak") or os.environ.get("URINGLOOP_SOAK") == "1")
