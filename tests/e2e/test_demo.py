"""`make demo`, the README's first command, runs to the end and proves its pings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_succeeds_and_cleans_up() -> None:
    before = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo: OK" in proc.stdout and "FAIL" not in proc.stdout
    assert "dnsmasq leases left: none" in proc.stdout
    after = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert after == before
