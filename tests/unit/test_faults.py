"""The fault-injection hooks read their environment once, at import (review F8)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import pytest

from cni_bridge_dhcp.agent.runtime import faults


def run(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, faults.FAIL_ENV)}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )


def test_parse_points_ignores_blanks_and_spaces() -> None:
    assert faults.parse_points(None) == frozenset()
    assert faults.parse_points(" add:veth, ,uplink:mac ,") == {"add:veth", "uplink:mac"}


def test_environment_set_after_import_arms_nothing() -> None:
    code = (
        "import os; from cni_bridge_dhcp.agent.runtime import faults;"
        "os.environ[faults.ENV] = 'add:veth'; os.environ[faults.FAIL_ENV] = 'undo:veth';"
        "faults.maybe_crash('add:veth'); faults.maybe_fail('undo:veth'); print('survived')"
    )
    proc = run(code, {})
    assert proc.returncode == 0 and proc.stdout.strip() == "survived", proc.stderr


def test_environment_set_at_start_arms_both_hooks() -> None:
    crash = run(
        "from cni_bridge_dhcp.agent.runtime import faults; faults.maybe_crash('add:veth')",
        {faults.ENV: "add:veth"},
    )
    assert crash.returncode == -signal.SIGKILL
    fail = run(
        "from cni_bridge_dhcp.agent.runtime import faults; faults.maybe_fail('undo:veth')",
        {faults.FAIL_ENV: "undo:veth"},
    )
    assert fail.returncode == 1 and "Too many open files" in fail.stderr


def test_announce_warns_only_when_armed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=faults.__name__)
    monkeypatch.setattr(faults, "CRASH_AT", frozenset())
    monkeypatch.setattr(faults, "FAIL_AT", frozenset())
    faults.announce()
    assert caplog.records == []
    monkeypatch.setattr(faults, "CRASH_AT", frozenset({"add:veth"}))
    monkeypatch.setattr(faults, "FAIL_AT", frozenset({"undo:veth"}))
    faults.announce()
    text = caplog.text
    assert "FAULT INJECTION ARMED" in text and "add:veth" in text and "undo:veth" in text
