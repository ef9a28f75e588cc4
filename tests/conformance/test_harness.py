"""The conformance harness's own verdicts: it must fail for every reason it claims to."""

from __future__ import annotations

import pytest

from .exclusions import EXCLUSIONS, Exclusion
from .harness import MODULES, PENDING_MODULES, Outcome, RunResult, compare, run_module


def _run(loop: str, **outcomes: str) -> RunResult:
    return RunResult("test_x", loop, {tid.replace("__", "."): Outcome(o)
                                      for tid, o in outcomes.items()}, python="3.11.7")


def test_conforming_run_is_ok() -> None:
    stock = _run("asyncio", A__a="pass", A__b="xfail", A__c="fail", A__d="skip")
    uring = _run("uringloop", A__a="pass", A__b="xfail", A__c="error", A__d="pass")
    assert compare(stock, uring, {}).ok


@pytest.mark.parametrize("outcome", ["fail", "error", "skip", "xpass", "hang", "crash"])
def test_regression_fails(outcome: str) -> None:
    stock = _run("asyncio", A__a="pass", A__b="pass")
    uring = _run("uringloop", A__a="pass", A__b=outcome)
    cmp = compare(stock, uring, {})
    assert not cmp.ok and list(cmp.regressions) == ["A.b"]


def test_test_missing_on_uringloop_fails() -> None:
    cmp = compare(_run("asyncio", A__a="pass", A__b="pass"), _run("uringloop", A__a="pass"), {})
    assert not cmp.ok and cmp.regressions["A.b"].outcome == "missing"


def test_uringloop_only_error_fails() -> None:
    # e.g. a tearDownModule error that only the uringloop run reports
    uring = _run("uringloop", A__a="pass", tearDownModule="error")
    cmp = compare(_run("asyncio", A__a="pass"), uring, {})
    assert not cmp.ok and list(cmp.regressions) == ["tearDownModule"]


def test_exclusion_covers_a_failure() -> None:
    cmp = compare(_run("asyncio", A__a="pass"), _run("uringloop", A__a="fail"),
                  {"A.a": Exclusion("why")})
    assert cmp.ok and list(cmp.excluded_failing) == ["A.a"]


def test_unexpected_pass_of_an_exclusion_fails() -> None:
    cmp = compare(_run("asyncio", A__a="pass"), _run("uringloop", A__a="pass"),
                  {"A.a": Exclusion("why")})
    assert not cmp.ok and list(cmp.unexpected_passes) == ["A.a"]


def test_stale_exclusion_fails() -> None:
    cmp = compare(_run("asyncio", A__a="pass"), _run("uringloop", A__a="pass"),
                  {"A.gone": Exclusion("why")})
    assert not cmp.ok and list(cmp.stale) == ["A.gone"]


def test_broken_oracle_fails() -> None:
    assert not compare(_run("asyncio"), _run("uringloop"), {}).ok
    stock = _run("asyncio", A__a="pass", A__b="hang")
    assert not compare(stock, _run("uringloop", A__a="pass", A__b="pass"), {}).ok
    stock.problems.append("run exceeded")
    assert not compare(stock, _run("uringloop", A__a="pass"), {}).ok


def test_exclusions_name_known_modules() -> None:
    assert set(EXCLUSIONS) <= set(MODULES) | set(PENDING_MODULES)
    for tests in EXCLUSIONS.values():
        for tid, exclusion in tests.items():
            assert "." in tid and exclusion.reason, tid


@pytest.mark.cpython
def test_hung_test_is_recorded_and_the_run_continues() -> None:
    # A 1 ms budget makes every test "hang": each is killed, recorded, and the
    # module restarted after it, until the restart limit ends the run.
    res = run_module("test_timeouts", "uringloop", test_timeout=0.001)
    hung = [tid for tid, o in res.outcomes.items() if o.outcome == "hang"]
    assert len(hung) > 1 and "Timeout" in res.outcomes[hung[0]].detail
    assert any("hung or crashed" in p for p in res.problems)
