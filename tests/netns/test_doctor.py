"""`doctor` on a sandbox node: clean when healthy, and each problem it knows, created on purpose.

Every test builds lan + node namespaces, starts a DHCP server and the agent in them, adds a
pod through the real libcni client, breaks one thing inside the sandbox, and runs doctor
inside the node namespace, as an operator would on the node.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent.datapath.netns import open_netns
from cni_bridge_dhcp.agent.dhcp import client_id_for
from cni_bridge_dhcp.agent.dhcp.client import DhcpClient
from cni_bridge_dhcp.agent.dhcp.clock import SystemClock
from cni_bridge_dhcp.agent.dhcp.messages import Identity
from cni_bridge_dhcp.agent.dhcp.session import Timing
from cni_bridge_dhcp.agent.dhcp.transport import PodTransportFactory, Target
from testbed.sandbox import ROUTER_IP, Pod, Sandbox, netns_exists, run
from tests.e2e.helpers import NET, add, conflist, ip_json

pytestmark = [pytest.mark.netns]

DOCTOR = "import sys; from cni_bridge_dhcp.ops.doctor import doctor_main; sys.exit(doctor_main(sys.argv[1:]))"
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-a"


@dataclass
class Node:
    sb: Sandbox
    pod: Pod
    conf: dict[str, Any]
    root: Path  # empty stand-in for / (network manager files)


def setup_node(
    sb: Sandbox, *, server: str = "dnsmasq", agent_args: list[str] | None = None
) -> Node:
    if server == "dnsmasq":
        sb.start_dnsmasq()
    else:
        sb.start_dhcpd(lease_seconds=600)  # no renewal while a test runs
    sb.start_agent(extra_args=agent_args)
    conf = conflist(sb)
    pod = sb.add_pod("a")
    add(sb, pod, conf, cni_args=POD_ARGS)
    root = sb.tmp / "root"
    root.mkdir()
    return Node(sb, pod, conf, root)


@dataclass
class Report:
    code: int
    data: dict[str, Any]
    stderr: str

    def failing(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for check in self.data["checks"]:
            if not check["ok"]:
                out.setdefault(check["check"], []).append(check)
        return out

    def problems(self, check: str) -> str:
        return "\n".join(c["problem"] for c in self.failing().get(check, []))


def doctor_cmd(node: Node, *args: str) -> list[str]:
    sb = node.sb
    return [
        sys.executable,
        "-c",
        DOCTOR,
        "--socket",
        str(sb.agent_socket),
        "--state-dir",
        str(sb.state_dir),
        "--conf-dir",
        str(sb.netconf_dir),
        "--root",
        str(node.root),
        *args,
    ]


def doctor(node: Node, *args: str) -> Report:
    proc = run(doctor_cmd(node, "--json", *args), netns=node.sb.node, check=False, timeout=120)
    assert proc.stdout, proc.stderr
    return Report(proc.returncode, json.loads(proc.stdout), proc.stderr)


def assert_only(report: Report, *checks: str) -> None:
    assert report.code == 1, report.data
    assert set(report.failing()) == set(checks), json.dumps(report.failing(), indent=1)


def probe_leftovers(node: Node) -> list[str]:
    return [link["ifname"] for link in ip_json(["link"], node.sb.node) if "probe" in link["ifname"]]


# ----------------------------------------------------------------------------- healthy


def test_clean_on_a_healthy_node_after_an_add(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    report = doctor(node, "--probe-dhcp")
    assert report.code == 0, json.dumps(report.failing(), indent=1)
    by_check = {c["check"]: c for c in report.data["checks"]}
    assert "offered" in by_check["dhcp-server"]["detail"]
    assert "1 pod(s) route via the node" in by_check["pod-routes"]["detail"]
    assert probe_leftovers(node) == []
    text = run(doctor_cmd(node), netns=sandbox.node, check=False)
    assert text.returncode == 0 and text.stdout.rstrip().endswith("no problems found")
    assert "FAIL" not in text.stdout


# ----------------------------------------------------------------------------- firewall


def test_forward_drop_in_iptables_legacy_without_our_rules(sandbox: Sandbox) -> None:
    run(["iptables-legacy", "-P", "FORWARD", "DROP"], netns=sandbox.node)
    node = setup_node(sandbox, agent_args=["--firewall-interval", "0"])
    assert doctor(node).code == 0  # the agent opened the legacy FORWARD chain at ADD
    run(["iptables-legacy", "-F", "FORWARD"], netns=sandbox.node)  # a "firewall reload"
    report = doctor(node)
    assert "forward-policy" in report.failing()
    assert "iptables-legacy filter: forward policy DROP" in report.problems("forward-policy")
    assert "jump to CBD-FORWARD" in report.problems("forward-policy")


def test_forward_drop_in_a_native_nft_table(sandbox: Sandbox) -> None:
    node = setup_node(sandbox, agent_args=["--firewall-interval", "0"])
    run(["nft", "add table inet hostfw"], netns=sandbox.node)
    run(
        [
            "nft",
            "add chain inet hostfw forward_filter { type filter hook forward priority 0; policy drop; }",
        ],
        netns=sandbox.node,
    )
    report = doctor(node)
    assert "forward-policy" in report.failing()
    assert "nft inet hostfw forward_filter: forward policy DROP" in report.problems(
        "forward-policy"
    )
    fixes = "\n".join(c["fix"] for c in report.failing()["forward-policy"])
    assert (
        'nft insert rule inet hostfw forward_filter iifname "cni0" oifname "cni0" accept' in fixes
    )


def test_br_netfilter_with_drop_and_no_accept_for_the_bridge(sandbox: Sandbox) -> None:
    run(["iptables-legacy", "-P", "FORWARD", "DROP"], netns=sandbox.node)
    node = setup_node(sandbox, agent_args=["--firewall-interval", "0"])
    # lose every rule of ours in the legacy filter table
    run(["iptables-legacy", "-F"], netns=sandbox.node)
    run(["iptables-legacy", "-X"], netns=sandbox.node)
    report = doctor(node)
    assert "bridge-nf-call-iptables=1" in report.problems("br-netfilter")
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"], netns=sandbox.node)
    report = doctor(node)
    assert "br-netfilter" not in report.failing()
    assert "forward-policy" in report.failing()  # routed traffic is still dropped


def test_iptables_backend_mismatch(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    # kubelet marks nftables as its backend; a tool writes legacy rules anyway
    run(["iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"], netns=sandbox.node)
    run(
        ["iptables-legacy", "-A", "FORWARD", "-s", "192.168.77.0/24", "-j", "ACCEPT"],
        netns=sandbox.node,
    )
    report = doctor(node)
    assert_only(report, "iptables-backend")
    assert "kubelet uses nftables" in report.problems("iptables-backend")
    assert "iptables-legacy holds 1 rules" in report.problems("iptables-backend")


# ----------------------------------------------------------------------------- datapath


def test_uplink_released_from_the_bridge(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    run(["ip", "-n", sandbox.node, "link", "set", "eth0", "nomaster"])
    report = doctor(node)
    assert "uplink" in report.failing()
    assert "'eth0' is not a port of any bridge" in report.problems("uplink")


def test_pod_default_route_changed_behind_our_back(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    run(["ip", "-n", node.pod.name, "route", "replace", "default", "via", ROUTER_IP, "dev", "eth0"])
    report = doctor(node)
    assert_only(report, "pod-routes")
    assert f"via {ROUTER_IP}, not via the node" in report.problems("pod-routes")
    assert "pod default/web-a" in report.problems("pod-routes")


def test_networkd_still_managing_the_uplink(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    netdir = node.root / "etc" / "systemd" / "network"
    netdir.mkdir(parents=True)
    (netdir / "20-wired.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")
    report = doctor(node)
    assert_only(report, "network-manager")
    (finding,) = report.failing()["network-manager"]
    assert "/etc/systemd/network/20-wired.network configures eth0 itself" in finding["problem"]
    assert "Bridge=cni0" in finding["fix"] and "Kind=bridge" in finding["fix"]


def test_dhcp_server_not_answering_the_probe(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    next(d for d in sandbox.daemons if d.name == "dnsmasq").stop()
    report = doctor(node, "--probe-dhcp", "--probe-timeout", "3")
    assert_only(report, "dhcp-server")
    assert "no DHCP server answered a DISCOVER sent through a veth on cni0" in report.problems(
        "dhcp-server"
    )
    assert probe_leftovers(node) == []
    ours = sorted(n for n in os.listdir("/run/netns") if n.startswith(sandbox.prefix))
    assert ours == sorted([sandbox.lan, sandbox.node, node.pod.name])


# ----------------------------------------------------------------------------- agent and state


def test_agent_stopped(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    next(d for d in sandbox.daemons if d.name == "agent").stop()
    report = doctor(node)
    assert_only(report, "agent")
    assert f"no socket at {sandbox.agent_socket}" in report.problems("agent")
    text = run(doctor_cmd(node), netns=sandbox.node, check=False)
    assert text.returncode == 1
    assert "FAIL  agent: agent is not running" in text.stdout
    assert "      fix: Every pod ADD fails with CNI error 11" in text.stdout


def test_stale_attachment_whose_netns_is_gone(sandbox: Sandbox) -> None:
    node = setup_node(sandbox)
    run(["ip", "netns", "delete", node.pod.name])  # the runtime never sent DEL
    assert not netns_exists(node.pod.name)
    report = doctor(node)
    assert "state" in report.failing()
    assert f"its network namespace {node.pod.path} no longer exists" in report.problems("state")


# ----------------------------------------------------------------------------- server leases


def lease_from_a_forgotten_pod(sb: Sandbox) -> None:
    """A client with a pod-style identity that no agent knows: a pod whose node lost its state."""
    ghost = sb.add_pod("ghost")
    sb.attach_to_lan(ghost)
    mac = ip_json(["link", "show", "eth0"], ghost.name)[0]["address"]
    fd = open_netns(ghost.path)

    async def obtain() -> None:
        client = DhcpClient(
            Identity(mac, client_id_for("default", "ghost", "c0", NET, "eth0"), "ghost"),
            label="ghost",
            clock=SystemClock(),
            timing=Timing(),
        )
        tr = await PodTransportFactory().open(
            Target(ghost.path, "eth0", mac, netns_fd=fd), bring_up=True
        )
        try:
            await client.obtain(tr, 20)
        finally:
            tr.close()

    try:
        asyncio.run(obtain())
    finally:
        os.close(fd)


def test_server_leases_disagree_with_the_agent(sandbox: Sandbox) -> None:
    node = setup_node(sandbox, server="dhcpd")
    leases = sandbox.dhcpd_leases_path
    assert doctor(node, "--server-leases", str(leases)).code == 0
    # the server loses its lease database, then leases to a pod identity no agent holds
    next(d for d in sandbox.daemons if d.name == "dhcpd").stop()
    leases.write_text("")
    sandbox.start_dhcpd(lease_seconds=600)
    lease_from_a_forgotten_pod(sandbox)
    report = doctor(node, "--server-leases", str(leases))
    assert_only(report, "server-leases")
    problems = report.problems("server-leases")
    # an empty database, or the ghost was offered .100 first and declined it (ARP): abandoned
    assert "pod default/web-a holds" in problems
    assert "server has no record of it" in problems or "server has it as abandoned" in problems
    assert "active for pod identity 'k8s:default/ghost/lan/eth0'" in problems
    shared = doctor(node, "--server-leases", str(leases), "--shared-lan")
    assert "pod identity" not in shared.problems("server-leases")


def test_probe_before_the_first_pod_uses_a_macvlan_on_the_uplink(sandbox: Sandbox) -> None:
    sandbox.start_dnsmasq()
    sandbox.start_agent()
    root = sandbox.tmp / "root"
    root.mkdir()
    sandbox.write_conflist(NET, conflist(sandbox))
    node = Node(sandbox, Pod("none", "/nonexistent"), {}, root)
    report = doctor(node, "--probe-dhcp")
    assert report.code == 0, json.dumps(report.failing(), indent=1)
    detail = next(c["detail"] for c in report.data["checks"] if c["check"] == "dhcp-server")
    assert "through a macvlan on eth0" in detail and "offered" in detail
    assert [link["ifname"] for link in ip_json(["link"], sandbox.node)] == ["lo", "eth0"]
