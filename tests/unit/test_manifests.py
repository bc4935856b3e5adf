"""The DaemonSet install: manifests against the Kubernetes schemas (offline, bundled with
kubernetes-validate), the fields the design depends on, and a container-less dry run of the
install entrypoint (deploy/install.py) against a temporary root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni_bridge_dhcp.agent.config import parse_netconf
from cni_bridge_dhcp.ops.doctor.textconf import load_yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
INSTALL = ROOT / "deploy" / "install.py"
K8S_VERSIONS = ("1.27.0", "1.30.0")  # plus the newest schema the package bundles


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def docs_by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in load_all(path)}


def test_manifests_validate_against_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    assert MANIFESTS
    for version in (*K8S_VERSIONS, kv.latest_version()):
        for path in MANIFESTS:
            for doc in load_all(path):
                kv.validate(doc, version, strict=True)  # raises with the offending field


def test_schema_validation_catches_a_misspelt_field() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    ds = docs_by_kind()["DaemonSet"]
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPropagaton"] = "x"
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, kv.latest_version(), strict=True)


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = docs_by_kind()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def test_daemonset_runs_in_the_node_network_privileged_on_every_node() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    assert spec.get("hostPID", False) is False
    assert {"operator": "Exists"} in spec["tolerations"]  # every taint
    assert spec["automountServiceAccountToken"] is False  # no API access: no RBAC
    (container,) = spec["containers"]
    assert container["securityContext"]["privileged"] is True
    assert container["command"] == ["cni-bridge-dhcp-install"]
    assert container["args"] == ["--root", "/host"]
    assert container["envFrom"] == [{"configMapRef": {"name": "cni-bridge-dhcp"}}]
    assert {"UPLINK", "BRIDGE"} <= set(docs_by_kind()["ConfigMap"]["data"])
    assert "ClusterRole" not in docs_by_kind() and "Role" not in docs_by_kind()


def test_daemonset_mounts_what_the_install_and_agent_use() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    expected = {
        "/host/opt/cni/bin": "/opt/cni/bin",
        "/host/etc/cni/net.d": "/etc/cni/net.d",
        "/run/cni-bridge-dhcp": "/run/cni-bridge-dhcp",
        "/var/run/netns": "/var/run/netns",
        "/var/lib/cni-bridge-dhcp": "/var/lib/cni-bridge-dhcp",
        "/run/xtables.lock": "/run/xtables.lock",
    }
    for mount_path, host_path in expected.items():
        assert host[mounts[mount_path]["name"]] == host_path, mount_path
        assert not mounts[mount_path].get("readOnly", False), mount_path
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert mounts["/host/etc"]["readOnly"] is True  # doctor --root /host only reads
    # the socket the readiness probe and the conflist name lives in the shared directory
    probe = container["readinessProbe"]["exec"]["command"]
    assert "/run/cni-bridge-dhcp/agent.sock" in probe


def test_containerfile_runs_the_install_entrypoint_with_the_zipapp() -> None:
    text = (ROOT / "deploy" / "Containerfile").read_text()
    # the default base is what a user pulls; make image IMAGE_BASE=local replaces it
    assert "ARG BASE=docker.io/library/python:3.11-slim" in text
    assert "FROM ${BASE}" in text
    # Python packages only from the host-built wheels in the context (scripts/build-image.py)
    assert "--no-index --find-links /wheels cni-bridge-dhcp" in text
    assert "COPY cni-bridge-dhcp /opt/cni-bridge-dhcp/cni-bridge-dhcp" in text
    assert "COPY install.py /usr/local/bin/cni-bridge-dhcp-install" in text
    assert 'ENTRYPOINT ["cni-bridge-dhcp-install"]' in text


# ----------------------------------------------------------------------------- install dry run


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "cni-bridge-dhcp"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-zipapp.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def install(
    root: Path, plugin: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    return subprocess.run(
        [sys.executable, str(INSTALL), "--root", str(root), "--plugin", str(plugin), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


_SETTINGS = ("UPLINK", "BRIDGE", "NETWORK_NAME", "PORTMAP", "MTU", "AGENT_BIN", "STABLE_MAC")


def test_install_writes_plugin_and_conflist(tmp_path: Path, zipapp: Path) -> None:
    root = tmp_path / "host"
    proc = install(
        root, zipapp, {"UPLINK": "enp3s0", "BRIDGE": "br-lan", "MTU": "1400"}, "--no-exec"
    )
    assert proc.returncode == 0, proc.stderr
    plugin = root / "opt" / "cni" / "bin" / "cni-bridge-dhcp"
    assert plugin.read_bytes() == zipapp.read_bytes()
    assert plugin.stat().st_mode & 0o777 == 0o755
    conf_path = root / "etc" / "cni" / "net.d" / "10-cni-bridge-dhcp.conflist"
    assert conf_path.stat().st_mode & 0o777 == 0o644
    conf = json.loads(conf_path.read_text())
    (ours,) = conf["plugins"]  # no portmap binary under this root
    assert ours["bridge"] == "br-lan" and ours["uplinkInterface"] == "enp3s0"
    assert ours["mtu"] == 1400 and ours["agentSocket"] == "/run/cni-bridge-dhcp/agent.sock"
    # the agent accepts what the installer wrote
    parsed = parse_netconf({"cniVersion": conf["cniVersion"], "name": conf["name"], **ours})
    assert parsed.bridge == "br-lan" and parsed.default_route == "node"
    assert (
        "would run: cni-bridge-dhcp daemon --socket /run/cni-bridge-dhcp/agent.sock" in proc.stderr
    )
    # the installed executable answers as a CNI plugin
    version = subprocess.run(
        [str(plugin)],
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        input='{"cniVersion": "1.0.0"}',
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert version.returncode == 0 and "supportedVersions" in version.stdout
    assert not [p.name for p in plugin.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_second_run_is_idempotent(tmp_path: Path, zipapp: Path) -> None:
    root = tmp_path / "host"
    assert install(root, zipapp, {}, "--no-exec").returncode == 0
    files = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    again = install(root, zipapp, {}, "--no-exec")
    assert again.returncode == 0
    assert again.stderr.count("unchanged") == 2
    after = {
        p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    assert after == before


def test_changed_settings_replace_the_conflist(tmp_path: Path, zipapp: Path) -> None:
    root = tmp_path / "host"
    assert install(root, zipapp, {}, "--no-exec").returncode == 0
    (root / "opt" / "cni" / "bin" / "portmap").write_text("#!/bin/sh\n")
    proc = install(root, zipapp, {"BRIDGE": "br1"}, "--no-exec")
    assert "wrote" in proc.stderr and "portmap on" in proc.stderr
    conf = json.loads((root / "etc" / "cni" / "net.d" / "10-cni-bridge-dhcp.conflist").read_text())
    assert conf["plugins"][0]["bridge"] == "br1"
    assert conf["plugins"][1] == {"type": "portmap", "capabilities": {"portMappings": True}}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIDGE": "a-very-long-bridge"}, "BRIDGE='a-very-long-bridge' is longer than 15"),
        ({"UPLINK": "eth0", "BRIDGE": "eth0"}, "UPLINK and BRIDGE must differ"),
        ({"UPLINK": "en(p"}, "UPLINK='en(p' is neither an interface name nor a regex"),
        ({"NETWORK_NAME": "my lan"}, "NETWORK_NAME='my lan'"),
        ({"PORTMAP": "maybe"}, "PORTMAP='maybe' must be one of auto, true, false"),
        ({"MTU": "20"}, "MTU='20' must be empty or 68 to 65535"),
        ({"STABLE_MAC": "yes"}, "STABLE_MAC='yes' must be one of true, false"),
    ],
)
def test_bad_settings_fail_clearly_and_write_nothing(
    tmp_path: Path, zipapp: Path, env: dict[str, str], message: str
) -> None:
    root = tmp_path / "host"
    proc = install(root, zipapp, env, "--no-exec")
    assert proc.returncode == 2
    assert message in proc.stderr and "nothing was written" in proc.stderr
    assert not root.exists()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", None), (None, None)])
def test_stable_mac_setting_reaches_the_ipam_config(
    tmp_path: Path, zipapp: Path, value: str | None, expected: bool | None
) -> None:
    root = tmp_path / "host"
    env = {} if value is None else {"STABLE_MAC": value}
    assert install(root, zipapp, env, "--no-exec").returncode == 0
    conf = json.loads((root / "etc" / "cni" / "net.d" / "10-cni-bridge-dhcp.conflist").read_text())
    ours = conf["plugins"][0]
    assert ours["ipam"].get("stableMac") is expected
    parsed = parse_netconf({"cniVersion": conf["cniVersion"], "name": conf["name"], **ours})
    assert parsed.ipam is not None and parsed.ipam.stable_mac is (expected is True)


def test_missing_plugin_executable_writes_nothing(tmp_path: Path) -> None:
    proc = install(tmp_path / "host", tmp_path / "nope", {}, "--no-exec")
    assert proc.returncode == 2 and "cannot read the plugin executable" in proc.stderr
    assert not (tmp_path / "host").exists()


def test_without_no_exec_the_agent_replaces_the_installer(tmp_path: Path, zipapp: Path) -> None:
    # AGENT_BIN=echo stands in for the agent: exec'd with the agent's arguments
    proc = install(
        tmp_path / "host", zipapp, {"AGENT_BIN": "echo"}, "--", "--firewall-interval", "30"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "daemon",
        "--socket",
        "/run/cni-bridge-dhcp/agent.sock",
        "--state-dir",
        "/var/lib/cni-bridge-dhcp",
        "--log-level",
        "info",
        "--firewall-interval",
        "30",
    ]


def test_the_fallback_reader_agrees_with_pyyaml_on_the_manifests() -> None:
    yaml = pytest.importorskip("yaml")

    def norm(x: Any) -> Any:  # the subset reader keeps numbers as strings
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, list):
            return [norm(v) for v in x]
        return str(x) if isinstance(x, int) and not isinstance(x, bool) else x

    for path in MANIFESTS:
        text = path.read_text()
        ours = [load_yaml(doc) for doc in text.split("\n---\n") if doc.strip()]
        assert ours == [norm(doc) for doc in yaml.safe_load_all(text) if doc], path


def test_a_node_without_the_plugins_interpreter_is_warned_about(
    tmp_path: Path, zipapp: Path
) -> None:
    """The kernel runs the #! line's /usr/bin/python3 itself: on a node without it, every
    CNI call fails as 'no such file or directory'. The installer says so, and why."""
    root = tmp_path / "host"
    proc = install(root, zipapp, {}, "--no-exec")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the plugin runs /usr/bin/python3, which this node does not have" in (
        proc.stderr
    )
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3").symlink_to("python3.11")  # as Debian's: relative
    proc = install(root, zipapp, {}, "--no-exec")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
