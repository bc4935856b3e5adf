"""ensure_bridge inside a sandbox node namespace."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from testbed.sandbox import REPO_ROOT, Sandbox, run

DRIVER = r"""
import json, sys
from cni_bridge_dhcp.agent.datapath.bridge import BridgeSpec, ensure_bridge
from cni_bridge_dhcp.cni.errors import CNIError
spec = BridgeSpec(**json.loads(sys.argv[1]))
try:
    print(json.dumps({"ok": ensure_bridge(spec)}))
except CNIError as exc:
    print(json.dumps({"error": {"code": exc.code, "msg": exc.msg, "details": exc.details}}))
"""


def ensure(sb: Sandbox, **spec: Any) -> dict[str, Any]:
    proc = run(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        netns=sb.node,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def link(sb: Sandbox, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        run(["ip", "-j", "-d", "link", "show", name], netns=sb.node).stdout
    )[0]
    return out


def sysctl(sb: Sandbox, key: str) -> str:
    return run(["sysctl", "-n", key], netns=sb.node).stdout.strip()


def test_creates_bridge_ready_for_pods(sandbox: Sandbox) -> None:
    sb = sandbox
    out = ensure(sb, name="cni0", mtu=1400, promisc=True)
    br = link(sb, "cni0")
    assert out == {"ok": br["ifindex"]}
    data = br["linkinfo"]["info_data"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in br["flags"] and "PROMISC" in br["flags"]
    assert data["stp_state"] == 0 and data["forward_delay"] == 0
    assert br["mtu"] == 1400
    assert sysctl(sb, "net.ipv6.conf.cni0.accept_ra") == "0"  # as the reference plugin
    # idempotent, same ifindex
    assert ensure(sb, name="cni0", mtu=1400, promisc=True) == out


def test_mtu_is_pinned_against_smaller_ports(sandbox: Sandbox) -> None:
    sb = sandbox
    ensure(sb, name="cni0", mtu=1500)  # equal to the kernel default: still pinned
    run(
        ["ip", "link", "add", "vp", "mtu", "1300", "type", "veth", "peer", "name", "vq"],
        netns=sb.node,
    )
    run(["ip", "link", "set", "vp", "master", "cni0", "up"], netns=sb.node)
    assert link(sb, "cni0")["mtu"] == 1500


def test_existing_bridge_gets_stp_off_and_zero_forward_delay(sandbox: Sandbox) -> None:
    sb = sandbox
    run(["ip", "link", "add", "cni0", "type", "bridge", "forward_delay", "1500"], netns=sb.node)
    run(["sysctl", "-qw", "net.ipv6.conf.cni0.accept_ra=2"], netns=sb.node)
    index = link(sb, "cni0")["ifindex"]
    assert ensure(sb, name="cni0") == {"ok": index}
    br = link(sb, "cni0")
    assert br["linkinfo"]["info_data"]["forward_delay"] == 0
    assert "UP" in br["flags"]
    # may be the node's LAN interface (pre-configured or taken over): RA settings kept
    assert sysctl(sb, "net.ipv6.conf.cni0.accept_ra") == "2"


def test_existing_non_bridge_link_is_code_7(sandbox: Sandbox) -> None:
    sb = sandbox
    run(["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p"], netns=sb.node)
    out = ensure(sb, name="cni0")
    assert out["error"]["code"] == 7
    assert "cni0" in out["error"]["msg"] and "not a bridge" in out["error"]["msg"]
    assert "veth" in out["error"]["details"]
    assert link(sb, "cni0")["linkinfo"]["info_kind"] == "veth"  # untouched


@pytest.mark.parametrize("name", ["", "a-name-far-too-long", "bad/name"])
def test_invalid_bridge_name_is_code_7(sandbox: Sandbox, name: str) -> None:
    out = ensure(sandbox, name=name)
    assert out["error"]["code"] == 7 and repr(name) in out["error"]["msg"]


def test_vlan_filtering_applied_or_refused_clearly(sandbox: Sandbox) -> None:
    sb = sandbox
    out = ensure(sb, name="cni0", vlan_filtering=True)
    if "ok" in out:
        assert link(sb, "cni0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
    else:  # kernels built without CONFIG_BRIDGE_VLAN_FILTERING (this machine's)
        assert out["error"]["code"] == 7
        assert "vlan filtering" in out["error"]["msg"] and "cni0" in out["error"]["msg"]
