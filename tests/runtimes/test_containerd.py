"""containerd's CRI drives the plugin the way kubelet does: RunPodSandbox, containers, Stop,
Remove, and portmap chained after us."""

from __future__ import annotations

import ipaddress
import time

import pytest

from cni_bridge_dhcp.agent.firewall.model import COMMENT_PREFIX
from testbed.sandbox import (
    BEHIND_IP6,
    LAN_PREFIX6,
    NODE_IP,
    POOL_END,
    POOL_START,
    ROUTER_IP,
    Sandbox,
    parse_dnsmasq_leases,
    ping,
    run,
)
from tests.e2e.helpers import agent_report, ip_json, links
from tests.runtimes.conftest import wait_for_ra_default
from tests.runtimes.cri import Containerd, PodSandbox
from tests.runtimes.images import BUSYBOX_REF


def leased(sb: Sandbox) -> set[str]:
    return {lease["ip"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}


def in_pool(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_address(POOL_START) <= ip <= ipaddress.ip_address(POOL_END)


def pod_ping(ctrd: Containerd, pod: PodSandbox, address: str) -> bool:
    cmd = ["busybox", "ping", "-c", "1", "-W", "2", address]
    return ctrd.pod_run(pod, cmd, check=False).returncode == 0


def explain_v6(sb: Sandbox, ctrd: Containerd, pod: PodSandbox) -> str:
    out = []
    for what in (["addr"], ["route"], ["neigh"]):
        out.append(ctrd.pod_run(pod, ["ip", "-6", *what], check=False).stdout)
        for ns in (sb.node, sb.lan):
            out.append(run(["ip", "-6", *what], netns=ns, check=False).stdout)
    out.append(run(["nft", "list", "ruleset"], netns=sb.node, check=False).stdout)
    return "\n".join(out) + sb.agent_logs()[-2000:]


def wait_for_dad(netns: str, dev: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    cmd = ["ip", "-6", "addr", "show", "dev", dev, "tentative"]
    while run(cmd, netns=netns).stdout.strip():
        assert time.monotonic() < deadline, f"{dev} in {netns}: DAD still running"
        time.sleep(0.2)


def veths(sb: Sandbox) -> list[str]:
    return [name for name in links(sb.node) if name.startswith("veth")]


def ruleset_lines(sb: Sandbox, cmd: list[str], pod_id: str) -> list[str]:
    """Lines of one backend's ruleset in the node (``cmd`` lists it) naming the pod's id."""
    return [ln for ln in run(cmd, netns=sb.node).stdout.splitlines() if pod_id in ln]


def firewall_lines(sb: Sandbox, pod_id: str) -> list[str]:
    """Lines of the node's rulesets (every backend) that name the pod's container id."""
    backends = (["iptables-legacy-save"], ["iptables-nft-save"], ["nft", "list", "ruleset"])
    return [ln for cmd in backends for ln in ruleset_lines(sb, cmd, pod_id)]


def test_run_pod_sandbox_leases_routes_reaches_and_stop_releases(
    node: Sandbox, containerd: Containerd
) -> None:
    sb, ctrd = node, containerd
    # a node whose FORWARD policy is DROP (Docker, Ubuntu): pods work only through our rules
    run(["iptables-nft", "-P", "FORWARD", "DROP"], netns=sb.node)
    cfg_a = ctrd.sandbox_config("web-0", namespace="shop", attempt=0)
    cfg_b = ctrd.sandbox_config("web-1", namespace="shop", attempt=1)
    a, b = ctrd.run_pod(cfg_a), ctrd.run_pod(cfg_b)

    # CRI reports the DHCP lease as the pod IP; the server has it
    assert in_pool(a.ip) and in_pool(b.ip) and a.ip != b.ip
    assert {a.ip, b.ip} <= leased(sb)
    # the agent knows the pod by kubelet's metadata (K8S_POD_NAMESPACE/NAME from containerd)
    pods = {p["containerId"]: p for p in agent_report(sb)["pods"]}
    assert a.id in pods and b.id in pods, pods
    assert "shop" in str(pods[a.id]) and "web-0" in str(pods[a.id])

    routes = [
        ln.replace(" proto static", "").strip()
        for ln in ctrd.pod_run(a, ["ip", "route"]).stdout.splitlines()
    ]
    assert f"default via {NODE_IP} dev eth0" in routes, routes
    assert pod_ping(ctrd, a, ROUTER_IP), sb.agent_logs()[-3000:]
    assert pod_ping(ctrd, a, NODE_IP)
    assert pod_ping(ctrd, a, b.ip) and pod_ping(ctrd, b, a.ip)
    lan_host = sb.add_pod("lanhost")
    sb.attach_to_lan(lan_host)
    run(["ip", "-n", lan_host.name, "addr", "add", "192.168.77.50/24", "dev", "eth0"])
    assert pod_ping(ctrd, a, "192.168.77.50")
    assert ping(lan_host.name, a.ip)

    # a container in the sandbox (busybox-static image) sees the leased address
    cid = ctrd.start_container(a, cfg_a, BUSYBOX_REF, ["/bin/sleep", "3600"])
    code, out = ctrd.exec_sync(cid, ["/bin/ip", "-4", "-o", "addr", "show", "eth0"])
    assert code == 0 and f"inet {a.ip}/24" in out, out

    assert firewall_lines(sb, a.id), "the agent writes per-pod FORWARD rules"
    ctrd.stop_pod(a.id)
    assert a.ip not in leased(sb), "StopPodSandbox must release the lease at the server"
    assert b.ip in leased(sb)
    assert a.id not in {p["containerId"] for p in agent_report(sb)["pods"]}
    ctrd.stop_pod(b.id)
    assert not veths(sb)
    assert not ({a.ip, b.ip} & leased(sb))
    assert agent_report(sb)["pods"] == []
    assert firewall_lines(sb, a.id) == [] and firewall_lines(sb, b.id) == []

    # RemovePodSandbox after Stop is a clean repeat (containerd calls DEL again)
    ctrd.remove_pod(a.id)
    ctrd.remove_pod(b.id)
    assert agent_report(sb)["pods"] == []
    assert not veths(sb)
    assert "ERROR" not in sb.agent_logs()


def test_portmap_chained_after_us_forwards_a_host_port(
    node: Sandbox, containerd: Containerd
) -> None:
    sb, ctrd = node, containerd
    cfg = ctrd.sandbox_config("echo", port_mappings=[(8080, 80)])
    pod = ctrd.run_pod(cfg)
    cid = ctrd.start_container(
        pod,
        cfg,
        BUSYBOX_REF,
        ["/bin/nc", "-ll", "-p", "80", "-e", "/bin/busybox", "echo", "hello-from-pod"],
    )
    # the LAN reaches the pod through the node's host port (portmap's DNAT in the node)
    got = ""
    for _ in range(20):
        proc = run(
            ["busybox", "nc", "-w", "2", NODE_IP, "8080"], netns=sb.lan, check=False, input=""
        )
        got = proc.stdout
        if "hello-from-pod" in got:
            break
    direct = run(["busybox", "nc", "-w", "2", pod.ip, "80"], netns=sb.lan, check=False, input="")
    assert "hello-from-pod" in got, (
        got,
        direct,
        ctrd.exec_sync(cid, ["/bin/busybox", "netstat", "-ltn"]),
        ctrd.container_log(cid),
        run(["iptables-save", "-t", "nat"], netns=sb.node).stdout,
    )
    assert cid
    nat_before_stop = run(["iptables-save", "-t", "nat"], netns=sb.node).stdout
    assert "8080" in nat_before_stop
    ctrd.stop_pod(pod.id)
    assert "8080" not in run(["iptables-save", "-t", "nat"], netns=sb.node).stdout
    assert pod.ip not in leased(sb)
    assert ip_json(["link"], sb.node)


@pytest.mark.parametrize("node", ["dual-stack"], indirect=True)
def test_dual_stack_pod_through_cri_reports_both_families(
    node: Sandbox, containerd: Containerd
) -> None:
    """Issue 15: on a LAN that announces IPv6, kubelet learns both of the pod's addresses from
    the sandbox status (CRI's ip and additional_ips), and the pod's IPv6 goes via the node."""
    sb, ctrd = node, containerd
    run(["ip6tables-nft", "-P", "FORWARD", "DROP"], netns=sb.node)
    pod = ctrd.run_pod(ctrd.sandbox_config("dual-0", namespace="shop"))
    assert in_pool(pod.ip) and pod.ip in leased(sb)
    assert len(pod.additional_ips) == 1, pod
    v6 = ipaddress.IPv6Address(pod.additional_ips[0])
    assert v6 in ipaddress.IPv6Network(f"{LAN_PREFIX6}/64")
    on_pod = ctrd.pod_run(pod, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
    assert f"inet6 {v6}/64" in on_pod.stdout, on_pod.stdout
    default6 = ctrd.pod_run(pod, ["ip", "-6", "route", "show", "default"]).stdout
    assert "via fe80::" in default6, default6  # the node's link-local on the bridge
    # The node relearns its own IPv6 default on the bridge from the LAN's next RA after the
    # takeover (README, limitations); until then it cannot forward the pod's IPv6.
    wait_for_ra_default(sb.node, "cni0")
    # An RA can arrive while the bridge's link-local (the pod's gateway) is still in DAD,
    # when the node does not answer for it yet: that is the same gap, so wait it out too.
    wait_for_dad(sb.node, "cni0")
    assert any(pod_ping(ctrd, pod, BEHIND_IP6) for _ in range(3)), explain_v6(sb, ctrd, pod)
    assert ping(sb.lan, str(v6))

    ctrd.stop_pod(pod.id)
    assert pod.ip not in leased(sb)
    assert firewall_lines(sb, pod.id) == [] and not veths(sb)
    ctrd.remove_pod(pod.id)
    assert agent_report(sb)["pods"] == []


# How nodes drop forwarded traffic besides iptables-nft's policy (the test above): a node still
# on iptables-legacy, a host firewall in its own nftables table (nftables.service,
# firewalld), and a node with both. Each must let pods through and hold nothing of a pod
# after StopPodSandbox.
FORWARD_DROPS = {
    "iptables-legacy": [["iptables-legacy", "-P", "FORWARD", "DROP"]],
    "nftables-host-table": [
        ["nft", "add table inet hostfw"],
        [
            "nft",
            "add chain inet hostfw forward { type filter hook forward priority 0; policy drop; }",
        ],
    ],
}
FORWARD_DROPS["both"] = FORWARD_DROPS["iptables-legacy"] + FORWARD_DROPS["nftables-host-table"]


@pytest.mark.parametrize("drop", sorted(FORWARD_DROPS))
def test_stop_leaves_no_rules_whichever_firewall_drops_forwarding(
    node: Sandbox, containerd: Containerd, drop: str
) -> None:
    sb, ctrd = node, containerd
    in_legacy = any(cmd[0] == "iptables-legacy" for cmd in FORWARD_DROPS[drop])
    in_nftables = any(cmd[0] == "nft" for cmd in FORWARD_DROPS[drop])
    for cmd in FORWARD_DROPS[drop]:
        run(cmd, netns=sb.node)
    a = ctrd.run_pod(ctrd.sandbox_config("fw-0", namespace="ops"))
    b = ctrd.run_pod(ctrd.sandbox_config("fw-1", namespace="ops"))
    assert pod_ping(ctrd, a, ROUTER_IP), sb.agent_logs()[-3000:]
    assert pod_ping(ctrd, a, b.ip) and pod_ping(ctrd, b, a.ip)
    # the pod's rules went where the drop is (a drop in either backend wins)
    if in_legacy:
        assert ruleset_lines(sb, ["iptables-legacy-save"], a.id)
    if in_nftables:
        assert ruleset_lines(sb, ["nft", "list", "ruleset"], a.id)

    ctrd.stop_pod(a.id)
    assert firewall_lines(sb, a.id) == []
    assert pod_ping(ctrd, b, ROUTER_IP), "stopping one pod leaves the other's rules"
    ctrd.stop_pod(b.id)
    for pod in (a, b):
        ctrd.remove_pod(pod.id)
        assert firewall_lines(sb, pod.id) == []
    assert not veths(sb)
    assert not ({a.ip, b.ip} & leased(sb))
    assert agent_report(sb)["pods"] == []
    # the host's own drops are as the node had them
    if in_legacy:
        assert (
            ":FORWARD DROP" in run(["iptables-legacy-save", "-t", "filter"], netns=sb.node).stdout
        )
    if in_nftables:
        host = run(["nft", "list", "table", "inet", "hostfw"], netns=sb.node).stdout
        assert "policy drop" in host and COMMENT_PREFIX not in host, host
    assert "ERROR" not in sb.agent_logs()
