"""Firewall backends against real iptables-legacy, iptables-nft and nftables, shown by traffic.

Topology (all inside sandbox namespaces)::

    lan:  lan0 192.168.77.1/24 (router, dnsmasq), lo 10.99.0.1/32 ("the internet")
      |  veth
    node: br0 192.168.77.10/24 (eth0 enslaved, as after the uplink takeover), default via .1
          vp1 -> pod p1 192.168.77.101/24   vp2 -> pod p2 192.168.77.102/24  (default via .10)
          ext0 10.98.0.10/24 -> ext netns 10.98.0.1/24 (a network reached only by routing)

The firewall code runs in a child process started with ``ip netns exec <node>``, as the
agent does: python-iptables and libnftables act on the namespace of the process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cni_bridge_dhcp.agent.firewall.model import pod_chain
from testbed.sandbox import NODE_IP, ROUTER_IP, Pod, Sandbox, ping, run

pytestmark = pytest.mark.netns

NET = "fwnet"
INTERNET_IP = "10.99.0.1"
EXT_IP = "10.98.0.1"
EXT_NODE_IP = "10.98.0.10"
UDP_PORT = 5353

# Runs inside the node namespace: {"requested": ..., "ops": [[verb, *args], ...]} on argv[1].
FW_HELPER = r"""
import ipaddress, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from cni_bridge_dhcp.agent.firewall import Firewall, PodRules, enable_forwarding
req = json.loads(sys.argv[1])
def pod(d):
    return PodRules(**{**d, "ips": tuple(ipaddress.ip_interface(i) for i in d["ips"])})
fw = Firewall(req["requested"])
out = {"backends": [b.name for b in fw.backends], "results": []}
for verb, *args in req["ops"]:
    if verb in ("add_pod", "check_pod"):
        res = getattr(fw, verb)(pod(args[0]))
    elif verb == "reassert":
        res = fw.reassert([pod(d) for d in args[0]])
    elif verb == "gc":
        res = fw.gc(args[0], {tuple(k) for k in args[1]})
    elif verb == "pods":
        res = sorted(fw.pods(args[0]))
    elif verb == "enable_forwarding":
        res = enable_forwarding(args[0])
    else:
        res = getattr(fw, verb)(*args)
    out["results"].append(res)
print(json.dumps(out))
"""

# Replies to every datagram with the source address it arrived from.
UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(peer[0].encode(), peer)
"""

UDP_ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(512)[0].decode())
except OSError:
    print("timeout")
"""


@dataclass
class Net:
    box: Sandbox
    p1: Pod
    p2: Pod
    ext: Pod
    servers: list[subprocess.Popen[bytes]]

    def fw(self, ops: list[list[Any]], requested: str = "auto") -> dict[str, Any]:
        proc = run(
            [sys.executable, "-c", FW_HELPER, json.dumps({"requested": requested, "ops": ops})],
            netns=self.box.node,
            timeout=60,
        )
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def node(self, *cmd: str, check: bool = True) -> str:
        return run(list(cmd), netns=self.box.node, check=check).stdout

    def ask(self, pod: Pod, address: str) -> str:
        """The source address ``address``'s UDP echo server saw, or "timeout"."""
        cmd = [sys.executable, "-c", UDP_ASK, address, str(UDP_PORT)]
        return run(cmd, netns=pod.name, timeout=20).stdout.strip()

    def dhcp(self, pod: Pod) -> bool:
        """A full DHCP exchange from ``pod`` through the node's bridge (address not applied).
        Five DISCOVERs 2 s apart: a loaded machine once answered none of three 1 s apart."""
        cmd = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "2"]
        cmd += ["-s", "/bin/true", "-x", "hostname:fwtest"]
        return run(cmd, netns=pod.name, check=False, timeout=30).returncode == 0

    def firewall_state(self) -> dict[str, list[str]]:
        """Everything a backend could change in the node, without counters/handles."""
        out = {}
        for tool in ("iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft"):
            text = self.node(f"{tool}-save")
            out[tool] = [
                re.sub(r"\[\d+:\d+\]", "", ln).rstrip()
                for ln in text.splitlines()
                if ln and not ln.startswith("#")
            ]
        # -s: stateless, without counters (traffic the namespaces send may move them)
        out["nft"] = self.node("nft", "-s", "list", "ruleset").splitlines()
        return out


def pod_rules(name: str, ip: str, *, masq: bool, spoof: bool) -> dict[str, Any]:
    index = name[-1]
    return {
        "network": NET,
        "container_id": f"{name}-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab",
        "ifname": "eth0",
        "bridge": "br0",
        "host_veth": f"vp{index}",
        "mac": f"02:00:00:00:01:0{index}",
        "ips": [f"{ip}/24"],
        "ip_masq": masq,
        "macspoofchk": spoof,
    }


P1 = pod_rules("p1", "192.168.77.101", masq=True, spoof=True)
P2 = pod_rules("p2", "192.168.77.102", masq=False, spoof=False)


def _plug_pod(box: Sandbox, pod: Pod, index: int) -> None:
    node = ["ip", "-n", box.node]
    host = f"vp{index}"
    run([*node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod.name])
    run([*node, "link", "set", host, "master", "br0", "up"])
    pod_ip = ["ip", "-n", pod.name]
    run([*pod_ip, "link", "set", "eth0", "address", f"02:00:00:00:01:0{index}"])
    run([*pod_ip, "link", "set", "lo", "up"])
    run([*pod_ip, "link", "set", "eth0", "up"])
    run([*pod_ip, "addr", "add", f"192.168.77.10{index}/24", "dev", "eth0"])
    run([*pod_ip, "route", "add", "default", "via", NODE_IP])


@pytest.fixture
def net(sandbox: Sandbox) -> Iterator[Net]:
    box = sandbox
    node, lan = ["ip", "-n", box.node], ["ip", "-n", box.lan]
    # the node as after the uplink takeover: eth0 enslaved, its address on br0
    run([*node, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
    run([*node, "addr", "flush", "dev", "eth0"])
    run([*node, "link", "set", "eth0", "master", "br0"])
    run([*node, "addr", "add", f"{NODE_IP}/24", "dev", "br0"])
    run([*node, "link", "set", "br0", "up"])
    run([*node, "route", "replace", "default", "via", ROUTER_IP])
    for key in ("net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"):
        run(["sysctl", "-qw", key], netns=box.node)
    # "the internet", behind the LAN router
    run([*lan, "addr", "add", f"{INTERNET_IP}/32", "dev", "lo"])
    # a network reached only through the node's routing
    ext = box.add_pod("ext")
    run([*node, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext.name])
    run([*node, "addr", "add", f"{EXT_NODE_IP}/24", "dev", "ext0"])
    run([*node, "link", "set", "ext0", "up"])
    run(["ip", "-n", ext.name, "link", "set", "lo", "up"])
    run(["ip", "-n", ext.name, "addr", "add", f"{EXT_IP}/24", "dev", "eth0"])
    run(["ip", "-n", ext.name, "link", "set", "eth0", "up"])
    run(["ip", "-n", ext.name, "route", "add", "192.168.77.0/24", "via", EXT_NODE_IP])
    p1, p2 = box.add_pod("p1"), box.add_pod("p2")
    _plug_pod(box, p1, 1)
    _plug_pod(box, p2, 2)
    servers = []
    for ns, addr in ((box.lan, INTERNET_IP), (ext.name, EXT_IP)):
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", UDP_ECHO, addr, str(UDP_PORT)]
        servers.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
    box.start_dnsmasq()
    n = Net(box, p1, p2, ext, servers)
    try:
        yield n
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(timeout=10)


HOST_DROP = {
    # a host whose FORWARD policy is DROP in legacy xtables; its nat table exists too, as
    # on any Docker host (a legacy table cannot be removed once the kernel made it)
    "iptables-legacy": [
        ["iptables-legacy", "-P", "FORWARD", "DROP"],
        ["iptables-legacy", "-t", "nat", "-S"],
    ],
    "iptables-nft": [["iptables-nft", "-P", "FORWARD", "DROP"]],
    "native-nft": [
        [
            "nft",
            "add table inet hostfw; "
            "add chain inet hostfw forward { type filter hook forward priority 0; policy drop; }",
        ]
    ],
}
HOST_DROP["legacy-and-native"] = HOST_DROP["iptables-legacy"] + HOST_DROP["native-nft"]
EXPECTED_BACKENDS = {
    "iptables-legacy": ["iptables"],
    "iptables-nft": ["nftables"],
    "native-nft": ["nftables"],
    "legacy-and-native": ["nftables", "iptables"],  # both evaluated: both get rules
}
# the same chain, emptied behind the plugin's back, in each host firewall
FLUSH_POD_CHAIN = {
    "iptables-legacy": ["iptables-legacy", "-F", pod_chain(NET, P1["container_id"], "eth0")],
    "iptables-nft": ["iptables-nft", "-F", pod_chain(NET, P1["container_id"], "eth0")],
    "legacy-and-native": ["iptables-legacy", "-F", pod_chain(NET, P1["container_id"], "eth0")],
    "native-nft": [
        "nft",
        "flush",
        "chain",
        "inet",
        "hostfw",
        pod_chain(NET, P1["container_id"], "eth0"),
    ],
}


@pytest.mark.parametrize("host", sorted(HOST_DROP))
def test_pods_work_under_a_drop_policy_and_leave_no_trace(net: Net, host: str) -> None:
    assert net.node("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
    assert net.fw([["enable_forwarding", False]], requested="none")["backends"] == ["none"]
    assert net.node("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    for cmd in HOST_DROP[host]:
        net.node(*cmd)
    before = net.firewall_state()

    # the host's DROP kills bridged traffic (br_netfilter), DHCP and routed traffic alike
    assert not ping(net.p1.name, "192.168.77.102")
    assert not ping(net.p1.name, ROUTER_IP)
    assert not net.dhcp(net.p1)
    assert net.ask(net.p2, EXT_IP) == "timeout"

    out = net.fw([["ensure_bridge", "br0"], ["add_pod", P1], ["add_pod", P2], ["check_pod", P1]])
    assert out["backends"] == EXPECTED_BACKENDS[host]
    assert out["results"][3] == []

    assert ping(net.p1.name, "192.168.77.102")  # pod <-> pod, bridged
    assert ping(net.p1.name, ROUTER_IP)  # pod <-> LAN, bridged
    assert net.dhcp(net.p1)
    assert net.dhcp(net.p2)
    # routed via the node to another network: pod rules + return traffic
    assert net.ask(net.p2, EXT_IP) == "192.168.77.102"
    # ipMasq: p1's traffic to the internet leaves with the node's address, p2's does not
    assert net.ask(net.p1, INTERNET_IP) == NODE_IP
    assert net.ask(net.p2, INTERNET_IP) == "192.168.77.102"
    assert net.ask(net.p1, EXT_IP) == EXT_NODE_IP

    # a pod rule removed behind the plugin's back: reported, restored, traffic back
    net.node(*FLUSH_POD_CHAIN[host])
    assert net.ask(net.p1, EXT_IP) == "timeout"
    out = net.fw([["check_pod", P1], ["check_pod", P2], ["reassert", [P1, P2]], ["check_pod", P1]])
    missing = out["results"][0]
    assert any(m.endswith(": from 192.168.77.101") for m in missing), missing
    assert any(m.endswith(": to 192.168.77.101") for m in missing), missing
    assert out["results"][1] == []
    assert sorted(out["results"][2]) == sorted(missing)
    assert out["results"][3] == []
    assert net.ask(net.p1, EXT_IP) == EXT_NODE_IP

    # every pod deleted, bridge rules removed: the host firewall is exactly as before
    out = net.fw(
        [
            ["del_pod", NET, P1["container_id"], "eth0"],
            ["del_pod", NET, P2["container_id"], "eth0"],
            ["remove_bridge", "br0"],
            ["pods", NET],
        ]
    )
    assert out["results"][3] == []
    assert net.firewall_state() == before
    assert not ping(net.p1.name, "192.168.77.102")


def test_macspoofchk_drops_frames_with_another_source_mac(net: Net) -> None:
    net.node("iptables-nft", "-P", "FORWARD", "DROP")
    net.fw([["ensure_bridge", "br0"], ["add_pod", P1], ["add_pod", P2]])
    assert ping(net.p1.name, "192.168.77.102")

    run(["ip", "-n", net.p1.name, "link", "set", "eth0", "address", "02:00:00:00:0e:01"])
    assert not ping(net.p1.name, "192.168.77.102")  # p1 checks its MAC
    assert not ping(net.p2.name, "192.168.77.101")
    run(["ip", "-n", net.p2.name, "link", "set", "eth0", "address", "02:00:00:00:0e:02"])
    run(["ip", "-n", net.p1.name, "link", "set", "eth0", "address", P1["mac"]])
    assert ping(net.p2.name, "192.168.77.101")  # p2 does not check its MAC

    net.fw([["del_pod", NET, P1["container_id"], "eth0"]])
    run(["ip", "-n", net.p1.name, "link", "set", "eth0", "address", "02:00:00:00:0e:01"])
    assert ping(net.p1.name, "192.168.77.102")  # its drop rule went with the pod


def test_firewall_reload_is_repaired_by_reassert(net: Net) -> None:
    for cmd in HOST_DROP["native-nft"]:
        net.node(*cmd)
    net.fw([["ensure_bridge", "br0"], ["add_pod", P1], ["add_pod", P2]])
    assert ping(net.p1.name, "192.168.77.102")

    # a firewall reload replaces the host's table: our jump and chains in it are gone
    net.node("nft", "delete table inet hostfw")
    for cmd in HOST_DROP["native-nft"]:
        net.node(*cmd)
    assert not ping(net.p1.name, "192.168.77.102")
    out = net.fw([["check_pod", P2], ["reassert", [P1, P2]]])
    assert "nftables: nft inet hostfw forward: forward" in out["results"][0]
    assert "nftables: nft inet hostfw CBD-FORWARD: bridge br0" in out["results"][0]
    assert out["results"][1]
    assert ping(net.p1.name, "192.168.77.102")


def test_gc_removes_only_attachments_not_kept(net: Net) -> None:
    net.node("iptables-legacy", "-P", "FORWARD", "DROP")
    net.node("iptables-legacy", "-t", "nat", "-S")
    other = {**P2, "network": "othernet"}
    out = net.fw(
        [
            ["enable_forwarding", False],
            ["ensure_bridge", "br0"],
            ["add_pod", P1],
            ["add_pod", P2],
            ["add_pod", other],
            ["gc", NET, [[P2["container_id"], "eth0"]]],
            ["pods", NET],
            ["pods", "othernet"],
        ]
    )
    assert out["results"][5] == [[P1["container_id"], "eth0"]]
    assert out["results"][6] == [[P2["container_id"], "eth0"]]
    assert out["results"][7] == [[P2["container_id"], "eth0"]]
    assert net.ask(net.p2, EXT_IP) == "192.168.77.102"
    assert net.ask(net.p1, EXT_IP) == "timeout"


def test_del_reaches_rules_left_in_a_backend_no_longer_selected(net: Net) -> None:
    net.fw([["ensure_bridge", "br0"], ["add_pod", P1]], requested="iptables")
    assert pod_chain(NET, P1["container_id"], "eth0") in net.node("iptables-legacy-save")
    out = net.fw([["del_pod", NET, P1["container_id"], "eth0"], ["remove_bridge", "br0"]])
    assert out["backends"] == ["nftables"]  # nothing in use: the default
    assert "CBD-" not in net.node("iptables-legacy-save")
    assert "cni-bridge-dhcp" not in net.node("nft", "list", "ruleset")


def ping6(netns: str, address: str) -> bool:
    cmd = ["busybox", "ping6", "-c", "1", "-W", "2", address]
    return run(cmd, netns=netns, check=False, timeout=15).returncode == 0


HOST_DROP6 = {
    # legacy: both families' FORWARD policies DROP; nat tables pre-exist (see HOST_DROP)
    "iptables-legacy": [
        ["iptables-legacy", "-P", "FORWARD", "DROP"],
        ["ip6tables-legacy", "-P", "FORWARD", "DROP"],
        ["iptables-legacy", "-t", "nat", "-S"],
        ["ip6tables-legacy", "-t", "nat", "-S"],
    ],
    "iptables-nft": [
        ["iptables-nft", "-P", "FORWARD", "DROP"],
        ["ip6tables-nft", "-P", "FORWARD", "DROP"],
    ],
}


@pytest.mark.parametrize("host", sorted(HOST_DROP6))
def test_dual_stack_pods_get_ipv6_rules_too(net: Net, host: str) -> None:
    for pod, index in ((net.p1, 1), (net.p2, 2)):
        run(["ip", "-n", pod.name, "addr", "add", f"fd00:77::{index}/64", "dev", "eth0", "nodad"])
    p1 = {**P1, "ips": [*P1["ips"], "fd00:77::1/64"]}
    p2 = {**P2, "ips": [*P2["ips"], "fd00:77::2/64"]}
    for cmd in HOST_DROP6[host]:
        net.node(*cmd)
    before = net.firewall_state()
    assert not ping6(net.p1.name, "fd00:77::2")  # bridged IPv6, NDP included, dies too

    out = net.fw([["ensure_bridge", "br0"], ["add_pod", p1], ["add_pod", p2], ["check_pod", p1]])
    assert out["backends"] == EXPECTED_BACKENDS[host]
    assert out["results"][3] == []
    # forget the neighbour resolution that failed under DROP, so the next ping re-resolves
    run(["ip", "-n", net.p1.name, "-6", "neigh", "flush", "dev", "eth0"])
    assert ping6(net.p1.name, "fd00:77::2")
    assert ping(net.p1.name, "192.168.77.102")
    tool = "ip6tables-legacy" if host == "iptables-legacy" else "ip6tables-nft"
    saved6 = net.node(f"{tool}-save")
    assert "-s fd00:77::1/128 -i br0" in saved6
    assert "MASQUERADE" in saved6 if host == "iptables-legacy" else "MASQUERADE" not in saved6

    net.fw(
        [
            ["del_pod", NET, P1["container_id"], "eth0"],
            ["del_pod", NET, P2["container_id"], "eth0"],
            ["remove_bridge", "br0"],
        ]
    )
    assert net.firewall_state() == before
