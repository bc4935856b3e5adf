"""`make demo`, the README's first command, runs to the end and proves its pings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_succeeds_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo: OK" in proc.stdout and "FAIL" not in proc.stdout
    assert "dnsmasq leases left: none" in proc.stdout
    # Only the namespaces the demo made are ours to check: others on the machine may come and go.
    made = set(re.findall(r"\b(cbd-[A-Za-z0-9_-]+)", proc.stdout))
    assert made, "the demo names no namespace it created"
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    left = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert not made & left, f"the demo left namespaces behind: {sorted(made & left)}"
    # A successful demo keeps no work directory (a failed one keeps its logs and says where).
    assert list(tmp_path.iterdir()) == []
