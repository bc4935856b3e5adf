"""Shared fixtures: the netns sandbox and the guard on the machine's own network namespace.

Tests under tests/netns, tests/e2e and tests/runtimes are marked ``netns``/``e2e``/``runtimes``
automatically; they need root and are skipped with a reason otherwise. Each of them runs under ``root_guard``: the
root namespace is snapshotted before the first such test and compared after every one of
them, so a leak fails the test that caused it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.sandbox import Sandbox, Snapshot, diff_snapshots, snapshot_root

ROOT_MARKERS = ("netns", "e2e", "runtimes")
_TESTS_DIR = Path(__file__).resolve().parent


def _needs_root(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) is not None for m in ROOT_MARKERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = Path(str(item.path)).resolve().relative_to(_TESTS_DIR)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in ROOT_MARKERS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: builds its own network namespaces")
        for item in items:
            if _needs_root(item):
                item.add_marker(skip)


class RootGuard:
    """The baseline snapshot of the root namespace and the check against it."""

    def __init__(self) -> None:
        self.baseline: Snapshot = snapshot_root()

    def check(self, when: str) -> None:
        problems = diff_snapshots(self.baseline, snapshot_root())
        if problems:
            # re-baseline so one leak is reported once, by the test that caused it
            self.baseline = snapshot_root()
            pytest.fail(
                f"the machine's own network namespace changed {when}:\n" + "\n".join(problems),
                pytrace=False,
            )


@pytest.fixture(scope="session")
def root_guard() -> Iterator[RootGuard]:
    guard = RootGuard()
    yield guard
    guard.check("during the test session")


@pytest.fixture(autouse=True)
def _guard_root_namespace(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _needs_root(request.node) or os.geteuid() != 0:
        yield
        return
    guard: RootGuard = request.getfixturevalue("root_guard")
    yield
    guard.check(f"during {request.node.nodeid}")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """lan + node namespaces (no DHCP server started yet); always torn down."""
    box = Sandbox(tmp_path)
    box.setup()
    try:
        yield box
    finally:
        box.teardown()
