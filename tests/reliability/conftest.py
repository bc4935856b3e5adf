"""The reliability layer (in ``make test``; alone: ``make test-reliability``): markers,
figures and the report.

Every test here needs root and builds its own namespaces, so every one is marked
``netns``: the root-namespace guard of tests/conftest.py then runs after each of them,
and they are skipped with a reason when not run as root.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.report import SCENARIOS, Report

_HERE = Path(__file__).resolve().parent
_report = Report()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(id): the issue 8 scenario a test proves")


def _in_layer(item: pytest.Item) -> bool:
    try:
        Path(str(item.path)).resolve().relative_to(_HERE)
    except ValueError:
        return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: tests/conftest.py skips netns-marked tests for non-root users after this.
    known = {s.id for s in SCENARIOS}
    for item in items:
        if not _in_layer(item):
            continue
        item.add_marker(pytest.mark.netns)
        marker = item.get_closest_marker("scenario")
        if marker is None or marker.args[0] not in known:
            raise pytest.UsageError(f"{item.nodeid}: needs @pytest.mark.scenario(<known id>)")
        _report.record(item.nodeid, marker.args[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if not _in_layer(item) or item.nodeid not in _report.tests:
        return
    rec = _report.tests[item.nodeid]
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        if hasattr(rep, "wasxfail"):
            rec.outcome = "xfailed" if rep.skipped else "xpassed"
            rec.reason = str(rep.wasxfail)
        elif rep.skipped:
            rec.outcome = "skipped"
        elif rep.failed:
            rec.outcome = "failed" if rep.when == "call" else "error"
            rec.reason = _first_line(rep.longreprtext)
        else:
            rec.outcome = "passed"
        rec.duration += rep.duration
    elif rep.when == "teardown":
        rec.duration += rep.duration
        if rep.failed:
            rec.outcome = "failed"
            text = rep.longreprtext
            rec.reason = (
                "changed the root namespace" if "own network namespace changed" in text else ""
            ) or _first_line(text)
        elif rec.outcome not in ("not run", "skipped"):
            _report.root_guard_checks += 1


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:200]
    return text.strip().splitlines()[-1][:200] if text.strip() else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _report.tests:
        return
    path = _report.write()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"reliability report: {path}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Figures for the report (counts, durations, bounds); filled in by the test."""
    rec = _report.tests.get(request.node.nodeid)
    return rec.figures if rec is not None else {}
