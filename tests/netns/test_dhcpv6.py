"""Issue 15, stateful half: DHCPv6 (IA_NA) for pods, through the libcni client (cnitool)
against real servers in the LAN namespace: Kea (kea-dhcp6, memfile) and dnsmasq (a
DHCPv6 range: its RAs carry the M flag)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from cni_bridge_dhcp.agent.firewall.model import pod_chain
from testbed.dhcpv6servers import (
    DNS6,
    DOMAIN6,
    POOL6_END,
    POOL6_START,
    kea6_lease_path,
    kea6_leases,
    start_dnsmasq_dhcpv6,
    start_kea6,
)
from testbed.sandbox import BEHIND_IP6, LAN_PREFIX6, Pod, Sandbox, run
from tests.e2e.helpers import NET, add, conflist, container_id, ip_json

pytestmark = [pytest.mark.netns]

PREFIX = ipaddress.IPv6Network(f"{LAN_PREFIX6}/64")
POOL = (ipaddress.IPv6Address(POOL6_START), ipaddress.IPv6Address(POOL6_END))
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"
# the node's own firewall drops forwarded traffic (native nftables, as tests/e2e)
NATIVE_DROP = """table inet hostfw {
  chain forward { type filter hook forward priority 0; policy drop; }
}
"""


def in_pool(address: ipaddress.IPv6Address) -> bool:
    return POOL[0] <= address <= POOL[1]


def wait_for(what: str, probe: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def node_learned_ras(sb: Sandbox) -> None:
    """The node's uplink has its RA-learned default route, as on a node that has been up
    for a while before the agent starts (ADD waits for a pod's RA only on a LAN the node
    knows to announce IPv6)."""
    cmd = ["ip", "-6", "route", "show", "default", "dev", "eth0", "proto", "ra"]
    wait_for("the node's RA default route", lambda: run(cmd, netns=sb.node).stdout.strip())


def v6_addrs(pod: Pod) -> dict[str, dict[str, Any]]:
    """Global IPv6 addresses on the pod's eth0: "addr/plen" -> ip -j addr_info entry."""
    out = {}
    for link in ip_json(["-6", "addr", "show", "dev", "eth0", "scope", "global"], pod.name):
        for a in link.get("addr_info", []):
            if "local" in a:
                out[f"{a['local']}/{a['prefixlen']}"] = a
    return out


def dhcpv6_ip(result: dict[str, Any]) -> ipaddress.IPv6Interface:
    found = [
        ipaddress.IPv6Interface(ip["address"])
        for ip in result.get("ips", [])
        if ":" in ip["address"] and in_pool(ipaddress.IPv6Interface(ip["address"]).ip)
    ]
    assert len(found) == 1, result
    return found[0]


def kea_active(sb: Sandbox) -> dict[str, str]:
    return {r.address: r.duid for r in kea6_leases(kea6_lease_path(sb)) if r.active}


def cnitool(sb: Sandbox, op: str, pod: Pod, conf: dict[str, Any], **kw: Any) -> Any:
    return sb.cnitool(op, NET, pod, conflist=conf, cni_args=K8S, **kw)


def test_dual_stack_pod_with_kea(sandbox: Sandbox) -> None:
    """ADD: the DHCPv6 address in the result (RA prefix length), on the interface with
    lifetimes, in Kea's lease file, DNS from option 23/24; CHECK passes; DEL releases it
    at Kea; a re-created pod (same identity) gets the same address."""
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)  # DHCPv4 + RAs (SLAAC, no M flag)
    start_kea6(sb)
    run(["nft", "-f", "-"], netns=sb.node, input=NATIVE_DROP)
    sb.start_agent()
    conf = conflist(sb)
    conf["plugins"][0]["ipam"]["dhcpv6"] = True
    pod = sb.add_pod("kea")
    result = add(sb, pod, conf, cni_args=K8S)
    logs = sb.agent_logs()[-3000:]
    versions = sorted(ipaddress.ip_interface(ip["address"]).version for ip in result["ips"])
    assert versions == [4, 6, 6], (result, logs)  # DHCPv4, SLAAC, DHCPv6
    v6 = dhcpv6_ip(result)
    assert v6.network == PREFIX  # the RA's on-link prefix covers it
    on_pod = v6_addrs(pod)
    assert str(v6) in on_pod, on_pod
    assert on_pod[str(v6)]["valid_life_time"] <= 20  # Kea's valid lifetime, not forever
    assert DNS6 in result["dns"]["nameservers"], result["dns"]
    assert DOMAIN6 in result["dns"]["search"], result["dns"]
    leases = kea_active(sb)
    assert str(v6.ip) in leases, leases

    # the per-pod IPv6 rules cover the DHCPv6 address: with the node's forward policy DROP,
    # the pod reaches the host behind the router from that address
    rules = run(["nft", "list", "ruleset"], netns=sb.node).stdout
    assert f"cni-bridge-dhcp: from {v6.ip}" in rules, rules
    ping6 = ["busybox", "ping", "-6", "-c", "1", "-W", "2", "-I", str(v6.ip), BEHIND_IP6]
    assert run(ping6, netns=pod.name, check=False, timeout=15).returncode == 0

    cnitool(sb, "check", pod, conf)
    run(["ip", "-6", "addr", "del", str(v6), "dev", "eth0"], netns=pod.name)
    drift = cnitool(sb, "check", pod, conf, check=False)
    assert drift.returncode != 0 and str(v6.ip) in drift.stderr + drift.stdout
    run(["ip", "-6", "addr", "add", str(v6), "dev", "eth0", "nodad"], netns=pod.name)

    cnitool(sb, "del", pod, conf)
    assert str(v6.ip) not in run(["nft", "list", "ruleset"], netns=sb.node).stdout
    wait_for("Kea marks the lease released", lambda: str(v6.ip) not in kea_active(sb), 10)
    assert "RELEASED" in sb.agent_logs()
    cnitool(sb, "del", pod, conf)  # idempotent

    # the pod re-created (new netns, new container id, same pod identity): same address
    pod2 = sb.add_pod("kea2")
    again = add(sb, pod2, conf, cni_args=K8S)
    assert dhcpv6_ip(again).ip == v6.ip, (again, result)
    cnitool(sb, "del", pod2, conf)


def test_agent_restart_keeps_and_renews_the_lease(sandbox: Sandbox) -> None:
    """SIGKILL of the agent, restart: the journaled lease is re-adopted and renewed at T1,
    so the pod still has its address after the first valid lifetime (20 s) is over."""
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)
    start_kea6(sb)  # valid 20 s, T1 5 s, T2 10 s
    agent = sb.start_agent()
    conf = conflist(sb)
    conf["plugins"][0]["ipam"]["dhcpv6"] = True
    pod = sb.add_pod("restart")
    v6 = dhcpv6_ip(add(sb, pod, conf, cni_args=K8S))
    bound_at = time.monotonic()
    agent.proc.kill()
    agent.proc.wait(timeout=10)
    sb.start_agent()
    wait_for("re-adoption", lambda: "dhcpv6 state=ADOPTED" in sb.agent_logs(), 10)
    # past the first lease's valid lifetime: only renewals keep the address
    while time.monotonic() - bound_at < 24:
        time.sleep(0.5)
    logs = sb.agent_logs()
    after_adopt = logs[logs.index("dhcpv6 state=ADOPTED") :]
    assert "dhcpv6 state=RENEWING" in after_adopt, after_adopt[-2000:]
    assert "dhcpv6 state=BOUND" in after_adopt, after_adopt[-2000:]
    assert "dhcpv6 state=EXPIRED" not in logs, logs[-2000:]
    assert str(v6) in v6_addrs(pod), (v6_addrs(pod), logs[-2000:])
    assert str(v6.ip) in kea_active(sb)
    cnitool(sb, "del", pod, conf)
    wait_for("Kea marks the lease released", lambda: str(v6.ip) not in kea_active(sb), 10)


def test_m_flag_from_dnsmasq_triggers_dhcpv6(sandbox: Sandbox) -> None:
    """No ipam.dhcpv6: the RA's M flag (dnsmasq with a DHCPv6 range) starts DHCPv6."""
    sb = sandbox
    start_dnsmasq_dhcpv6(sb)
    node_learned_ras(sb)
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("mflag")
    result = add(sb, pod, conf, cni_args=K8S)
    logs = sb.agent_logs()[-3000:]
    v6 = dhcpv6_ip(result)  # the only IPv6 address: the RA's prefix has no A flag
    assert sorted(ipaddress.ip_interface(i["address"]).version for i in result["ips"]) == [
        4,
        6,
    ], (result, logs)
    assert v6.network == PREFIX
    assert str(v6) in v6_addrs(pod)
    assert DNS6 in result["dns"]["nameservers"], result["dns"]
    # the pod's IPv6 default goes via the node (defaultRoute "node"), as with SLAAC
    assert any(r["dst"] == "::/0" for r in result["routes"]), result["routes"]
    dnsmasq_log = (sb.tmp / "dnsmasq.log").read_text()
    assert f"DHCPREPLY(lan0) {v6.ip}" in dnsmasq_log, dnsmasq_log[-2000:]
    cnitool(sb, "del", pod, conf)
    wait_for(
        "dnsmasq logs the RELEASE",
        lambda: "DHCPRELEASE(lan0)" in (sb.tmp / "dnsmasq.log").read_text(),
        10,
    )


def _dhcpv6_packets(sb: Sandbox, seconds: float, action: Callable[[], object]) -> str:
    """What tcpdump in the lan namespace saw on UDP 546/547 while ``action`` ran."""
    cap = sb.tmp / "dhcpv6.pcap.txt"
    with cap.open("w") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", sb.lan, "tcpdump", "-l", "-n", "-i", "lan0", "udp port 547"],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # tcpdump attached
            action()
            time.sleep(seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=5)
    return cap.read_text()


def test_ra_without_m_flag_sends_no_dhcpv6(sandbox: Sandbox) -> None:
    sb = sandbox
    start_dnsmasq_dhcpv6(sb, ra_only=True)  # SLAAC only
    node_learned_ras(sb)
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("nom")
    results: list[dict[str, Any]] = []
    seen = _dhcpv6_packets(sb, 1.0, lambda: results.append(add(sb, pod, conf, cni_args=K8S)))
    assert seen.strip() == "", seen
    six = [i for i in results[0]["ips"] if ":" in i["address"]]
    assert len(six) == 1 and not in_pool(ipaddress.IPv6Interface(six[0]["address"]).ip)
    assert "DHCPv6" not in sb.agent_logs()
    cnitool(sb, "del", pod, conf)


def test_no_dhcpv6_server_is_a_timeout_error_and_nothing_is_left(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)  # DHCPv4 and RAs, no DHCPv6 server
    sb.start_agent()
    conf = conflist(sb)
    conf["plugins"][0]["ipam"].update({"dhcpv6": True, "timeout": 3})
    pod = sb.add_pod("nov6")
    proc = sb.cnitool("add", NET, pod, conflist=conf, cni_args=K8S, check=False)
    assert proc.returncode != 0
    err = json.loads(proc.stderr or proc.stdout)
    assert err["code"] == 100, err  # the DHCPv4 timeout's code
    assert "DHCPv6" in err["msg"], err
    # nothing half-done: the pod link, the DHCPv4 lease, the records and rules are gone
    assert [link["ifname"] for link in ip_json(["link"], pod.name)] == ["lo"]
    state = sb.state_dir
    assert not any((state / "leases").glob("*.json")), list((state / "leases").iterdir())
    assert not any((state / "leases6").glob("*.json")) if (state / "leases6").exists() else True
    assert "RELEASED" in sb.agent_logs()  # the DHCPv4 lease given back
    chain = pod_chain(NET, container_id(pod), "eth0")
    for save in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        assert chain not in run(save, netns=sb.node, check=False).stdout, save


def test_lease_lost_when_the_server_is_gone_then_regained(sandbox: Sandbox) -> None:
    """Kea stops answering: RENEW then REBIND go unanswered, the lease ends at its valid
    lifetime, the address comes off the pod (logged); once Kea is back the client
    solicits again and the pod has an address again."""
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)
    kea = start_kea6(sb)  # valid 20 s, T1 5 s, T2 10 s
    sb.start_agent()
    conf = conflist(sb)
    conf["plugins"][0]["ipam"]["dhcpv6"] = True
    pod = sb.add_pod("lost")
    v6 = dhcpv6_ip(add(sb, pod, conf, cni_args=K8S))
    kea.stop()
    wait_for("the lease to end", lambda: "dhcpv6 state=EXPIRED" in sb.agent_logs(), 30)
    logs = sb.agent_logs()
    assert "dhcpv6 state=RENEWING" in logs and "dhcpv6 state=REBINDING" in logs
    assert str(v6) not in v6_addrs(pod)
    start_kea6(sb)
    wait_for("the address back", lambda: str(v6) in v6_addrs(pod), 40)
    cnitool(sb, "check", pod, conf)
    cnitool(sb, "del", pod, conf)
