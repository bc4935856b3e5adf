"""Issue 15 (SLAAC half): dual-stack pods on a LAN that announces IPv6.

The LAN's router (dnsmasq ``--enable-ra``, ra-only) announces a /64; the pod gets its
SLAAC address (EUI-64 of its MAC), ADD reports it, the pod's IPv6 default goes via the
node's link-local address on the bridge, the node forwards IPv6 (FORWARD DROP, our rules)
and keeps its own RA-learned default route; DEL removes the IPv6 rules. A LAN without RAs
gives an IPv4-only result.
"""

from __future__ import annotations

import ipaddress
import re
import time

import pytest

from cni_bridge_dhcp.agent.datapath.slaac import LEARNED_TTL, QUIET_LAN_CERTAIN, QUIET_LAN_WAIT
from cni_bridge_dhcp.agent.firewall.model import pod_chain
from testbed.sandbox import BEHIND_IP6, LAN_PREFIX6, ROUTER_IP, Sandbox, ping, run
from tests.e2e.helpers import NET, add, conflist, container_id, ip_json

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

NATIVE_DROP = """table inet hostfw {
  chain forward { type filter hook forward priority 0; policy drop; }
}
"""
DROP = {
    "iptables-legacy": [
        ["iptables-legacy", "-P", "FORWARD", "DROP"],
        ["ip6tables-legacy", "-P", "FORWARD", "DROP"],
    ],
    "iptables-nft": [
        ["iptables-nft", "-P", "FORWARD", "DROP"],
        ["ip6tables-nft", "-P", "FORWARD", "DROP"],
    ],
    "native-nft": [["nft", "-f", "-"]],
}
SAVE = {
    "iptables-legacy": ["ip6tables-legacy-save"],
    "iptables-nft": ["ip6tables-nft-save"],
    "native-nft": ["nft", "list", "ruleset"],
}
PREFIX = ipaddress.IPv6Network(f"{LAN_PREFIX6}/64")


def eui64(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    octets = bytearray(int(b, 16) for b in mac.split(":"))
    octets[0] ^= 0x02
    iid = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return ipaddress.IPv6Address(int(prefix.network_address) | int.from_bytes(iid, "big"))


def v6_default(netns: str, dev: str | None = None) -> list[dict[str, object]]:
    routes = ip_json(["-6", "route", "show", "default"], netns)
    return [r for r in routes if dev is None or r.get("dev") == dev]


def wait_for(what: str, probe: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def global_v6(netns: str, dev: str) -> list[str]:
    out = []
    for link in ip_json(["-6", "addr", "show", "dev", dev, "scope", "global"], netns):
        for a in link.get("addr_info", []):
            if "local" in a:
                out.append(f"{a['local']}/{a['prefixlen']}")
    return out


@pytest.mark.parametrize("backend", sorted(DROP))
def test_dual_stack_pod_through_the_node(sandbox: Sandbox, backend: str) -> None:
    sb = sandbox
    for cmd in DROP[backend]:
        run(cmd, netns=sb.node, input=NATIVE_DROP if cmd[0] == "nft" else None)
    sb.start_dnsmasq(ipv6_ra=True)
    # The node learns the LAN's IPv6 on its uplink first, as a real node would have.
    wait_for("the node's RA default route", lambda: v6_default(sb.node, "eth0"))
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("v6")
    result = add(sb, pod, conf)
    logs = sb.agent_logs()[-3000:]

    ips = [ipaddress.ip_interface(ip["address"]) for ip in result["ips"]]
    assert sorted(ip.version for ip in ips) == [4, 6], (result, logs)
    v6 = next(ip for ip in ips if ip.version == 6)
    mac = next(i["mac"] for i in result["interfaces"] if i.get("sandbox"))
    assert v6.network == PREFIX  # prefix length from the RA
    assert v6.ip == eui64(PREFIX, mac)  # stable: derived from the pod MAC
    assert str(v6) in global_v6(pod.name, "eth0")

    # defaultRoute "node": the pod's IPv6 default goes via the node's link-local on cni0.
    node_ll = [
        a["local"]
        for link in ip_json(["-6", "addr", "show", "dev", "cni0", "scope", "link"], sb.node)
        for a in link["addr_info"]
        if "local" in a
    ]
    pod_default = v6_default(pod.name)
    assert [r["gateway"] for r in pod_default] == node_ll, (
        run(["ip", "-6", "route"], netns=pod.name).stdout,
        result.get("routes"),
        logs[-600:],
    )
    assert {"dst": "::/0", "gw": node_ll[0]} in result["routes"]
    v6_entry = next(ip for ip in result["ips"] if ":" in ip["address"])
    assert v6_entry["gateway"] == node_ll[0]

    # The node forwards IPv6 and still has its own RA-learned default route and address.
    assert (
        run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"], netns=sb.node).stdout.strip() == "1"
    )
    wait_for("the node's default route on cni0", lambda: v6_default(sb.node, "cni0"), 25)
    assert any(a.startswith(LAN_PREFIX6) for a in global_v6(sb.node, "cni0"))

    # Through the node (FORWARD DROP there, our rules let it pass) to a host behind the router.
    assert ping(pod.name, BEHIND_IP6, count=2), sb.agent_logs()[-3000:]
    assert ping(pod.name, ROUTER_IP)
    rules = run(SAVE[backend], netns=sb.node).stdout
    assert f"cni-bridge-dhcp: from {v6.ip}" in rules, rules
    # Still there after some time, with forwarding on (RA every 10 s on the LAN).
    time.sleep(11)
    assert v6_default(sb.node, "cni0")
    assert ping(pod.name, BEHIND_IP6)

    # CHECK finds the IPv6 address, the IPv6 default route and the IPv6 rules in place.
    sb.cnitool("check", NET, pod, conflist=conf)
    if backend != "native-nft":  # ip6tables: a chain of its own for IPv6 only
        chain = pod_chain(NET, container_id(pod), "eth0")
        run([SAVE[backend][0].replace("-save", ""), "-F", chain], netns=sb.node)
        drift = sb.cnitool("check", NET, pod, conflist=conf, check=False)
        report = drift.stdout + drift.stderr
        assert drift.returncode != 0 and f"from {v6.ip}" in report, report
        assert f"cni-bridge-dhcp: from {v6.ip}" in run(SAVE[backend], netns=sb.node).stdout
    sb.cnitool("del", NET, pod, conflist=conf)
    after = run(SAVE[backend], netns=sb.node).stdout
    assert str(v6.ip) not in after
    assert container_id(pod) not in after


def test_lan_without_ra_gives_ipv4_only(lan: Sandbox) -> None:
    sb = lan
    pod = sb.add_pod("v4")
    started = time.monotonic()
    result = add(sb, pod, conflist(sb))
    took = time.monotonic() - started
    assert [ipaddress.ip_interface(ip["address"]).version for ip in result["ips"]] == [4]
    assert all(":" not in r["dst"] for r in result["routes"])
    assert took < 10, took


def test_a_long_quiet_lan_costs_no_ra_wait(lan: Sandbox) -> None:
    """The node listens for RAs on the bridge and has learned none for QUIET_LAN_CERTAIN:
    ADD no longer waits for a pod's RA (an IPv4-only LAN pays nothing for IPv6); the
    agent's debug log says how long each ADD waited."""
    sb = lan
    conf = conflist(sb)
    first = add(sb, sb.add_pod("q1"), conf)
    time.sleep(QUIET_LAN_CERTAIN + 0.5)
    second = add(sb, sb.add_pod("q2"), conf)
    for result in (first, second):
        assert [ipaddress.ip_interface(ip["address"]).version for ip in result["ips"]] == [4]
    waits = re.findall(r"no IPv6 from an RA within ([0-9.]+) s", sb.agent_logs())
    assert waits == [f"{QUIET_LAN_WAIT:.1f}", "0.0"], waits


def test_a_router_that_comes_up_later_gives_the_next_pods_ipv6(lan: Sandbox) -> None:
    """A LAN without RAs (the node has heard none), then a router starts announcing: once
    the node has learned from it, the next ADD waits for the pod's RA and reports its IPv6.
    What the node learned is re-read at most every LEARNED_TTL, never kept for good."""
    sb = lan
    conf = conflist(sb)
    before = add(sb, sb.add_pod("before"), conf)
    assert [ipaddress.ip_interface(ip["address"]).version for ip in before["ips"]] == [4]
    sb.start_radvd()
    wait_for("the node's bridge learns the LAN's prefix", lambda: global_v6(sb.node, "cni0"))
    time.sleep(LEARNED_TTL)
    pod = sb.add_pod("after")
    after = add(sb, pod, conf)
    versions = sorted(ipaddress.ip_interface(ip["address"]).version for ip in after["ips"])
    assert versions == [4, 6], after
    reported = [ip["address"] for ip in after["ips"] if ":" in ip["address"]]
    assert reported == global_v6(pod.name, "eth0")


def test_ipv6_off_keeps_the_pod_ipv4_only(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)
    sb.start_agent()
    pod = sb.add_pod("off")
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "ipv6": "off"})
    result = add(sb, pod, conf)
    assert [ipaddress.ip_interface(ip["address"]).version for ip in result["ips"]] == [4]
    knob = ["sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"]
    assert run(knob, netns=pod.name).stdout.strip() == "1"
    time.sleep(11)  # past the router's next unsolicited RA (every 10 s)
    assert global_v6(pod.name, "eth0") == []


def test_dhcp_mode_keeps_the_routers_ipv6_default(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq(ipv6_ra=True)
    wait_for("the node's RA default route", lambda: v6_default(sb.node, "eth0"))
    sb.start_agent()
    pod = sb.add_pod("dhcp")
    result = add(sb, pod, conflist(sb, defaultRoute="dhcp"))
    router_ll = [
        a["local"]
        for link in ip_json(["-6", "addr", "show", "dev", "lan0", "scope", "link"], sb.lan)
        for a in link["addr_info"]
        if "local" in a
    ]
    v6_entry = next(ip for ip in result["ips"] if ":" in ip["address"])
    assert v6_entry["gateway"] == router_ll[0]
    assert [r["gateway"] for r in v6_default(pod.name)] == router_ll
    assert ping(pod.name, BEHIND_IP6)


def test_a_router_pacing_its_ras_still_gets_every_pod_reported(sandbox: Sandbox) -> None:
    """RFC 4861 lets a router answer a solicitation up to MIN_DELAY_BETWEEN_RAS (3 s) after
    its previous multicast RA, plus 0.5 s: the second of two pods added back to back hears
    its RA seconds later. ADD must wait that long on a LAN the node knows announces IPv6,
    or Kubernetes never learns the pod's IPv6 address (the kernel configures it anyway)."""
    sb = sandbox
    sb.start_dnsmasq()  # DHCPv4 only; radvd announces IPv6
    sb.start_radvd(min_delay_between_ras=3)
    wait_for("the node's RA default route", lambda: v6_default(sb.node, "eth0"))
    sb.start_agent()
    conf = conflist(sb)
    families = []
    for name in ("first", "second", "third"):
        pod = sb.add_pod(name)
        result = add(sb, pod, conf)
        families.append(
            sorted(ipaddress.ip_interface(ip["address"]).version for ip in result["ips"])
        )
        reported = [ip["address"] for ip in result["ips"] if ":" in ip["address"]]
        assert reported == global_v6(pod.name, "eth0"), (name, result, global_v6(pod.name, "eth0"))
    story = [
        line
        for line in sb.agent_logs().splitlines()
        if " ADD " in line or "IPv6" in line or "takeover" in line
    ]
    assert families == [[4, 6]] * 3, "\n".join([str(families), *story])
