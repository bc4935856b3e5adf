"""The self-contained plugin in build/native/ (scripts/build-native.py) on a node without Python.

Skipped unless build/native/ holds a build, so CI does not have to build it. What a node admin
relies on: the file runs with the bare environment a runtime gives it, with no Python install
visible at all, from behind the /opt/cni/bin symlink the install step makes, and it does the
full ADD/DEL through the real libcni client.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from testbed.sandbox import REPO_ROOT, Sandbox, run
from tests.e2e.helpers import NET, conflist

NATIVE = REPO_ROOT / "build" / "native"
EXE = NATIVE / "cni-bridge-dhcp"
SCRUBBED = {"PATH": "/usr/bin:/bin"}
VERSION_IN = '{"cniVersion":"1.0.0"}'

pytestmark = pytest.mark.skipif(
    not (EXE.exists() and (NATIVE / "BUILD-INFO.json").exists()),
    reason="no native build in build/native (scripts/build-native.py)",
)


def _plugin(
    exe: Path, env: dict[str, str], stdin: str, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    # env is the whole environment, as `env -i` would leave it
    return subprocess.run(
        [str(exe)], input=stdin, env=env, capture_output=True, text=True, timeout=30, cwd=cwd
    )


def _build_native() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_native", REPO_ROOT / "scripts" / "build-native.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _assert_version_reply(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["cniVersion"] == "1.0.0"
    assert "1.0.0" in reply["supportedVersions"]


def test_version_with_a_scrubbed_environment() -> None:
    _assert_version_reply(_plugin(EXE, {**SCRUBBED, "CNI_COMMAND": "VERSION"}, VERSION_IN))


def test_python_variables_and_cwd_do_not_change_the_code_that_runs(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("import sys\nsys.stderr.write('DECOY')\nsys.exit(97)\n")
    env = {
        **SCRUBBED,
        "CNI_COMMAND": "VERSION",
        "PYTHONHOME": "/nonexistent",
        "PYTHONPATH": str(tmp_path),
    }
    proc = _plugin(EXE, env, VERSION_IN, cwd=str(tmp_path))
    assert "DECOY" not in proc.stderr
    _assert_version_reply(proc)


def test_runs_with_every_python_install_hidden() -> None:
    """In a private mount namespace every python3 binary, libpython, stdlib and venv is gone."""
    hide = [
        f"mount -t tmpfs -o ro,size=4k tmpfs {d}"
        for d in (
            "/usr/lib/python3",
            "/usr/lib/python3.11",
            "/usr/local/lib/python3.11",
            "/root/.pyenv",
            str(REPO_ROOT / ".venv"),
            str(REPO_ROOT / "build" / "venv-native"),
        )
        if Path(d).is_dir()
    ]
    for pattern in ("/usr/bin/python3*", "/usr/lib/x86_64-linux-gnu/libpython3*"):
        base, glob = pattern.rsplit("/", 1)
        hide += [
            f"mount --bind /dev/null {f}"
            for f in sorted(Path(base).glob(glob))
            if f.is_file() and not f.is_symlink()
        ]
    script = "\n".join(
        [
            "set -e",
            *hide,
            "if /usr/bin/python3 -c pass 2>/dev/null; then exit 96; fi",
            f"exec env -i PATH=/usr/bin:/bin CNI_COMMAND=VERSION {EXE}",
        ]
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        input=VERSION_IN,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 96, "python3 was still visible: the check proves nothing"
    _assert_version_reply(proc)


def test_add_with_the_agent_down_is_a_cni_error(tmp_path: Path) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "cni-bridge-dhcp",
        "agentSocket": str(tmp_path / "none.sock"),
    }
    env = {
        **SCRUBBED,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "native-test",
        "CNI_NETNS": str(tmp_path / "no-netns"),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    proc = _plugin(EXE, env, json.dumps(conf))
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["cniVersion"] == "1.0.0"
    # the netns path is checked by the agent, which is not there: code 11, naming the socket
    assert error["code"] == 11, error
    assert str(tmp_path) in error["msg"], error
    assert "Traceback" not in proc.stdout + proc.stderr


def _install(bin_dir: Path) -> None:
    info: dict[str, Any] = json.loads((NATIVE / "BUILD-INFO.json").read_text())
    _build_native().install(NATIVE, info, bin_dir)


def test_installed_behind_a_symlink_in_a_cni_bin_dir(tmp_path: Path) -> None:
    bin_dir = tmp_path / "opt-cni-bin"
    _install(bin_dir)
    _install(bin_dir)  # idempotent: same build, same single copy
    installed = bin_dir / "cni-bridge-dhcp"
    _assert_version_reply(_plugin(installed, {**SCRUBBED, "CNI_COMMAND": "VERSION"}, VERSION_IN))
    info = json.loads((NATIVE / "BUILD-INFO.json").read_text())
    if info["directory"]:
        assert installed.is_symlink()
        assert [p.name for p in (bin_dir / ".cni-bridge-dhcp").iterdir()] == [info["directory"]]
    # libcni finds plugins by exact file name: nothing else in the bin dir looks like one
    assert sorted(p.name for p in bin_dir.iterdir() if not p.name.startswith(".")) == [
        "cni-bridge-dhcp"
    ]


def test_add_and_del_through_libcni_with_the_native_plugin(sandbox: Sandbox) -> None:
    """cnitool (libcni) in the node execs the native build from its CNI_PATH."""
    sandbox.start_dnsmasq()
    sandbox.start_agent()
    _install(sandbox.cni_bin_dir)  # Sandbox.cnitool keeps a plugin already there
    pod = sandbox.add_pod("native")
    conf = conflist(sandbox)
    proc = sandbox.cnitool("add", NET, pod, conflist=conf)
    plugin = sandbox.cni_bin_dir / "cni-bridge-dhcp"
    assert plugin.read_bytes()[:4] == b"\x7fELF", "cnitool ran another plugin than the native one"
    result = json.loads(proc.stdout)
    address = result["ips"][0]["address"]
    assert address.startswith("192.168.77.")
    pod_addrs = run(["ip", "-4", "-o", "addr", "show", "eth0"], netns=pod.name).stdout
    assert address in pod_addrs
    sandbox.cnitool("del", NET, pod, conflist=conf)
    gone = run(["ip", "-o", "link", "show", "eth0"], netns=pod.name, check=False)
    assert gone.returncode != 0
