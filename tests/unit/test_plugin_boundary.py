"""The plugin's exec path stays standard-library only and works as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PLUGIN_MODULES = (
    "cni_bridge_dhcp.cli",
    "cni_bridge_dhcp.plugin.skel",
    "cni_bridge_dhcp.plugin.agent_client",
    "cni_bridge_dhcp.plugin.status",
)
# What the zipapp ships (scripts/build-zipapp.py): the exec path may load nothing else of ours.
SHIPPED = ("cni_bridge_dhcp.cni.", "cni_bridge_dhcp.plugin.")
SHIPPED_TOP = {
    "cni_bridge_dhcp",
    "cni_bridge_dhcp.cli",
    "cni_bridge_dhcp.cni",
    "cni_bridge_dhcp.plugin",
}


def test_plugin_path_imports_no_third_party_or_agent_code() -> None:
    code = (
        "import sys\n"
        f"for m in {PLUGIN_MODULES!r}: __import__(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    loaded = set(out.stdout.split())
    forbidden = {
        m
        for m in loaded
        if m.split(".")[0] in {"pyroute2", "pydantic", "iptc", "dhcp_leases", "logging"}
    }
    assert not forbidden
    assert not {m for m in loaded if m.startswith("cni_bridge_dhcp.agent")}
    ours = {m for m in loaded if m.split(".")[0] == "cni_bridge_dhcp"}
    assert {m for m in ours if m not in SHIPPED_TOP and not m.startswith(SHIPPED)} == set()
    stdlib = set(sys.stdlib_module_names)
    third_party = {
        m for m in loaded - ours if m.split(".")[0] not in stdlib and not m.startswith("_")
    }
    # site-packages hooks of the venv (editable-install finders) are the only allowed extras.
    assert all("editable" in m or m.startswith("__editable__") for m in third_party), third_party


def test_version_as_a_process() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "VERSION"}
    proc = subprocess.run(
        [sys.executable, "-m", "cni_bridge_dhcp"],
        input=b'{"cniVersion":"0.4.0"}',
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }
    assert proc.stderr == b""


def test_errors_as_a_process_exit_nonzero_with_json_on_stdout() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD"}
    proc = subprocess.run(
        [sys.executable, "-m", "cni_bridge_dhcp"],
        input=b"{oops",
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == 6
