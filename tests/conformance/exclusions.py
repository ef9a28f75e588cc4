"""Tests of CPython's asyncio suite that pass on stock asyncio but not on uringloop.

Every entry names one test (``Class.test_method`` inside its module) and the
reason it is not expected to pass.  The list is kept honest both ways: a
listed test that passes on uringloop fails the conformance test ("unexpected
pass: remove the exclusion"), and so does an entry naming a test that does
not exist on the Python it applies to.

Reasons are constants so that a group can be flipped on in one edit: when a
feature lands, delete its group below and the conformance test then demands
that those tests pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Exclusion:
    reason: str
    versions: frozenset[str] | None = None   # "3.12" ...; None: every supported Python


# -- reasons ---------------------------------------------------------------------

NOT_A_SELECTOR_LOOP = (
    "not applicable: checks BaseSelectorEventLoop._internal_fds and skips itself on "
    "any loop that is not a selector loop; uringloop is a proactor-style loop")

NO_CHILD_WATCHER = (
    "by design: uringloop waits for its children on the ring (pidfd / IORING_OP_WAITID) "
    "and never consults the child-watcher API (deprecated in 3.12, removed in 3.14), so "
    "an inactive watcher cannot make it refuse to spawn")

# -- the table -----------------------------------------------------------------

EXCLUSIONS: dict[str, dict[str, Exclusion]] = {}


def _exclude(module: str, reason: str, tests: Iterable[str],
             versions: Iterable[str] | None = None) -> None:
    table = EXCLUSIONS.setdefault(module, {})
    for test in tests:
        if test in table:
            raise ValueError(f"{module}.{test} is excluded twice")
        table[test] = Exclusion(reason, frozenset(versions) if versions else None)


_exclude("test_events", NOT_A_SELECTOR_LOOP, [
    "ConformanceEventLoopTests.test_internal_fds",
])


_exclude("test_subprocess", NO_CHILD_WATCHER, [
    "GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher",
])


def exclusions_for(module: str, version: str) -> dict[str, Exclusion]:
    """The exclusions of ``module`` that apply on Python ``version`` ("3.12")."""
    return {tid: e for tid, e in EXCLUSIONS.get(module, {}).items()
            if e.versions is None or version in e.versions}
