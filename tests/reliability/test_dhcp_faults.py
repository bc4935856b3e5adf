"""DHCP servers that misbehave while pods hold leases through the real agent and plugin:
a NAK at renewal (ISC dhcpd), no or nonsense T1/T2, a new address at renewal, and a rogue
server racing the real one."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

import pytest
from dhcp_leases import DhcpLeases

from testbed.sandbox import (
    NODE_IP,
    POOL_END,
    POOL_START,
    ROUTER_IP,
    Pod,
    Sandbox,
    dhcpd_config,
    ping,
    run,
)
from tests.e2e.helpers import NET, add, agent_report, conflist, pod_routes
from tests.reliability.lib import (
    events,
    firewall_text,
    journal_by_key,
    lease_key,
    pod_ipv4,
    start_fake_dhcp,
    stop_named,
    wait_for,
)

INTERNET_IP = "10.99.0.1"  # on the lan namespace's lo: reached only through the node


def add_internet(sb: Sandbox) -> None:
    run(["ip", "-n", sb.lan, "addr", "add", f"{INTERNET_IP}/32", "dev", "lo"])


def in_pool(address: str) -> bool:
    ip = ipaddress.IPv4Interface(address).ip
    return ipaddress.IPv4Address(POOL_START) <= ip <= ipaddress.IPv4Address(POOL_END)


def record(sb: Sandbox, pod: Pod) -> dict[str, Any]:
    return journal_by_key(sb)[lease_key(pod)]


def assert_pod_works(sb: Sandbox, pod: Pod, address: str) -> None:
    """The pod holds exactly ``address``, its node routes, and reaches LAN and beyond."""
    assert pod_ipv4(pod) == [address]
    routes = pod_routes(pod)
    assert f"default via {NODE_IP} dev eth0" in routes, routes
    assert f"{NODE_IP} dev eth0 scope link" in routes, routes
    assert ping(pod.name, ROUTER_IP)
    assert ping(pod.name, INTERNET_IP), "no connectivity through the node"


# -- NAK at renewal ---------------------------------------------------------------------------

LEASE_NAK = 12


@pytest.mark.scenario("dhcp-nak")
def test_renewal_nak_moves_the_pod_to_a_new_lease(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    config = dhcpd_config(lease_seconds=LEASE_NAK)
    sb.start_dhcpd(config=config)
    add_internet(sb)
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("nak")
    old = add(sb, pod, conf)["ips"][0]["address"]
    old_ip = old.split("/")[0]
    assert_pod_works(sb, pod, old)

    # The server comes back from a restart believing the address belongs to someone else:
    # it NAKs the renewal ("lease unavailable").
    stop_named(sb, "dhcpd")
    sb.dhcpd_leases_path.write_text(
        f"lease {old_ip} {{\n  starts 4 2020/01/01 00:00:00;\n  ends never;\n"
        "  binding state active;\n  hardware ethernet 02:11:22:33:44:55;\n"
        '  uid "someone-else";\n}\n'
    )
    sb.start_dhcpd(config=config)
    wait_for(
        lambda: record(sb, pod)["address"] != old and record(sb, pod)["state"] == "BOUND",
        3 * LEASE_NAK,
        "the NAKed lease to be replaced",
    )
    new = record(sb, pod)["address"]
    dhcpd_log = (sb.tmp / "dhcpd.log").read_text()
    assert f"DHCPNAK on {old_ip}" in dhcpd_log
    assert in_pool(new) and new != old
    assert "state=EXPIRED" in sb.agent_logs() and "NAK from" in sb.agent_logs()
    wait_for(lambda: pod_ipv4(pod) == [new], 5, "the new address on the pod")
    assert_pod_works(sb, pod, new)
    (entry,) = agent_report(sb)["pods"]
    assert entry["lease"]["address"] == new and entry["lease"]["state"] == "BOUND"
    assert entry["ips"] == [new], "the agent's record did not follow the new lease"

    sb.cnitool("del", NET, pod, conflist=conf)
    new_ip = new.split("/")[0]
    wait_for(
        lambda: (
            {x.ip: x for x in DhcpLeases(str(sb.dhcpd_leases_path)).get()}[new_ip].binding_state
            == "free"
        ),
        5,
        "dhcpd to free the new lease after DEL",
    )
    figures["NAKs"] = dhcpd_log.count(f"DHCPNAK on {old_ip}")
    figures["address"] = f"{old} -> {new}"


# -- T1/T2 --------------------------------------------------------------------------------------

LEASE_T = 12


@pytest.mark.scenario("dhcp-no-t1t2")
@pytest.mark.parametrize("server", ["dhcpd-omits-t1t2", "scripted-bogus-t1t2"])
def test_missing_or_bogus_t1_t2_default_and_renew_on_time(
    sandbox: Sandbox, figures: dict[str, Any], server: str
) -> None:
    sb = sandbox
    if server.startswith("dhcpd"):
        sb.start_dhcpd(config=dhcpd_config(lease_seconds=LEASE_T))
    else:
        start_fake_dhcp(sb, lease_time=LEASE_T, timers="bogus")
    sb.start_agent()
    pod = sb.add_pod("t")
    address = add(sb, pod, conflist(sb))["ips"][0]["address"]
    first = record(sb, pod)
    opts = first["options"]
    if server.startswith("dhcpd"):
        assert "58" not in opts and "59" not in opts, "dhcpd sent T1/T2 after all"
    else:
        assert int(opts["58"], 16) > LEASE_T and int(opts["59"], 16) == 0
    assert (first["t1"], first["t2"], first["lease_time"]) == (
        0.5 * LEASE_T,
        0.875 * LEASE_T,
        LEASE_T,
    )
    renewals = []
    for _ in range(2):
        prev = record(sb, pod)
        wait_for(
            lambda prev=prev: record(sb, pod)["bound_at"] > prev["bound_at"],  # type: ignore[misc]
            LEASE_T,
            "a renewal",
        )
        cur = record(sb, pod)
        # sent after T1 (a little slack for the timer), answered before T2
        assert prev["renew_at"] - 0.5 <= cur["bound_at"] < prev["rebind_at"]
        assert cur["address"] == address and cur["state"] == "BOUND"
        renewals.append(round(cur["bound_at"] - prev["bound_at"], 2))
    assert "REBINDING" not in sb.agent_logs()
    figures[f"{server}: seconds between renewals (T1 = {0.5 * LEASE_T:g})"] = renewals


# -- a new address at renewal ---------------------------------------------------------------

LEASE_MOVE = 10


@pytest.mark.scenario("dhcp-address-change")
def test_new_address_at_renewal_keeps_routes_and_connectivity(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    log = start_fake_dhcp(sb, lease_time=LEASE_MOVE, new_address_at_renewal=True)
    add_internet(sb)
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("move")
    seen = [add(sb, pod, conf)["ips"][0]["address"]]
    assert_pod_works(sb, pod, seen[0])
    for _ in range(2):
        wait_for(lambda: record(sb, pod)["address"] != seen[-1], 2 * LEASE_MOVE, "a moved address")
        seen.append(record(sb, pod)["address"])
        wait_for(lambda: pod_ipv4(pod) == [seen[-1]], 5, "the pod to follow")
        assert_pod_works(sb, pod, seen[-1])
        (entry,) = agent_report(sb)["pods"]
        assert entry["lease"]["address"] == seen[-1]
    assert len(set(seen)) == 3
    sb.cnitool("del", NET, pod, conflist=conf)
    wait_for(lambda: any(e.get("rx") == "RELEASE" for e in events(log)), 5, "the RELEASE")
    figures["addresses"] = " -> ".join(seen)


EXT_IP = "10.98.0.1"
EXT_NODE_IP = "10.98.0.10"


@pytest.mark.scenario("dhcp-address-change")
def test_new_address_is_forwarded_on_a_forward_drop_node(sandbox: Sandbox) -> None:
    sb = sandbox
    # A network the node reaches by routing (not through the bridge), behind FORWARD DROP.
    ext = sb.add_pod("ext")
    run(["ip", "-n", sb.node, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0",
         "netns", ext.name])  # fmt: skip
    run(["ip", "-n", sb.node, "addr", "add", f"{EXT_NODE_IP}/24", "dev", "ext0"])
    run(["ip", "-n", sb.node, "link", "set", "ext0", "up"])
    run(["ip", "-n", ext.name, "addr", "add", f"{EXT_IP}/24", "dev", "eth0"])
    run(["ip", "-n", ext.name, "link", "set", "eth0", "up"])
    run(["ip", "-n", ext.name, "route", "add", "default", "via", EXT_NODE_IP])
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    drop = "table inet hostfw {\n  chain forward { type filter hook forward priority 0; policy drop; }\n}\n"
    run(["nft", "-f", "-"], netns=sb.node, input=drop)
    start_fake_dhcp(sb, lease_time=LEASE_MOVE, new_address_at_renewal=True)
    sb.start_agent()
    pod = sb.add_pod("movedrop")
    first = add(sb, pod, conflist(sb))["ips"][0]["address"]
    assert ping(pod.name, EXT_IP), "not even the first address is forwarded"
    wait_for(lambda: record(sb, pod)["address"] != first, 2 * LEASE_MOVE, "a moved address")
    wait_for(lambda: pod_ipv4(pod) == [record(sb, pod)["address"]], 5, "the pod to follow")
    assert ping(pod.name, EXT_IP, count=2), "the new address is not forwarded"
    (entry,) = agent_report(sb)["pods"]
    assert entry["ips"] == [entry["lease"]["address"]], "the agent's record is stale"
    old_ip = re.escape(first.split("/")[0])
    assert not re.search(rf"{old_ip}(?![0-9])", firewall_text(sb.node)), "old address rules kept"
    assert "still has the old address" in sb.agent_logs(), "the move is not explained in the log"


# -- a rogue server -------------------------------------------------------------------------

ROGUE_IP = "192.168.77.2"
ROGUE_POOL = ("192.168.77.50", "192.168.77.59")


@pytest.mark.scenario("dhcp-rogue")
def test_rogue_server_is_ignored_with_server_allow_list(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    # dnsmasq pings before offering (~3 s), so the rogue always answers first.
    sb.start_dnsmasq(no_ping=False)
    rogue = start_fake_dhcp(
        sb, "rogue", server_ip=ROGUE_IP, pool=ROGUE_POOL, nak_foreign_requests=True
    )
    sb.start_agent()
    guarded = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "serverAllowList": [ROUTER_IP]})
    pod = sb.add_pod("guarded")
    started = time.monotonic()
    result = add(sb, pod, guarded)
    seconds = time.monotonic() - started
    address = result["ips"][0]["address"]
    assert in_pool(address), f"{address} is not from the real server"
    (entry,) = agent_report(sb)["pods"]
    assert entry["lease"]["server"] == ROUTER_IP
    offers = [e for e in events(rogue) if e.get("sent") == "OFFER"]
    naks = [e for e in events(rogue) if e.get("sent") == "NAK"]
    assert offers, "the rogue never answered: the test proves nothing"
    assert naks, "the rogue never NAKed: the NAK half of the promise is unproven"
    assert f"ignoring DHCP replies from {ROGUE_IP}" in sb.agent_logs()
    assert ping(pod.name, ROUTER_IP)

    # Control: without the allow list the rogue wins the race.
    open_pod = sb.add_pod("unguarded")
    unguarded = add(sb, open_pod, conflist(sb))["ips"][0]["address"]
    rogue_first, rogue_last = (int(ipaddress.ip_address(a)) for a in ROGUE_POOL)
    assert rogue_first <= int(ipaddress.ip_interface(unguarded).ip) <= rogue_last
    sb.cnitool("del", NET, pod, conflist=guarded)
    sb.cnitool("del", NET, open_pod, conflist=conflist(sb))
    figures["rogue OFFERs ignored"] = len(offers)
    figures["rogue NAKs ignored"] = len(naks)
    figures["ADD seconds with the rogue racing"] = round(seconds, 1)
    figures["control without allow list"] = f"rogue address {unguarded}"
