"""DHCP trust through the real agent and plugin (issue 12 item 5): a rogue forging the allowed
server's id from another MAC, option 121 routes that would bypass the node in
``defaultRoute: "node"`` mode, option 15/119 text with control characters, and an address
moved at renewal onto one a squatter holds."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from cni_bridge_dhcp.agent.dhcp import options
from testbed.sandbox import NODE_IP, ROUTER_IP, Sandbox, ping, run
from tests.e2e.helpers import NET, add, conflist, ip_json, pod_routes
from tests.reliability.lib import events, journal_by_key, lease_key, pod_ipv4, wait_for

ROGUE_POOL = ("192.168.77.50", "192.168.77.59")
ROGUE_ROUTER = "192.168.77.66"


def mac_of(netns: str, ifname: str) -> str:
    (link,) = ip_json(["link", "show", ifname], netns)
    return str(link["address"])


def fake_dhcp_in(sb: Sandbox, netns: str, name: str, **behaviour: Any) -> Path:
    """testbed/fakedhcp.py in ``netns`` (a LAN host of its own); its log path."""
    log = sb.tmp / f"{name}.jsonl"
    conf = sb.tmp / f"{name}.json"
    conf.write_text(json.dumps({"log": str(log), **behaviour}))
    cmd = [sys.executable, "-m", "testbed.fakedhcp", str(conf)]
    daemon = sb._spawn(name, cmd, netns=netns, log_path=sb.tmp / f"{name}.log")
    sb._wait_until(daemon, lambda: log.exists() and "started" in log.read_text(), f"{name} up")
    return log


def fixed_lan_mac(sb: Sandbox) -> str:
    """Fix lan0's MAC: a Linux bridge with no address set takes its lowest port MAC, so the
    server's MAC would change when the rogue's port joins (a real server's MAC is stable;
    one that changes is refused until its learned entry is removed: documented)."""
    mac = mac_of(sb.lan, "lan0")
    run(["ip", "-n", sb.lan, "link", "set", "lan0", "address", mac])
    return mac


def in_range(address: str, first: str, last: str) -> bool:
    ip = ipaddress.IPv4Interface(address).ip
    return ipaddress.IPv4Address(first) <= ip <= ipaddress.IPv4Address(last)


# -- (a) a rogue writing the allowed server's id -------------------------------------------------


def test_rogue_forging_the_allowed_server_id_from_another_mac_is_ignored(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    # dnsmasq pings before offering (~3 s), so the rogue always answers first.
    sb.start_dnsmasq(no_ping=False)
    sb.start_agent()
    guarded = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "serverAllowList": [ROUTER_IP]})
    real_mac = fixed_lan_mac(sb)
    first = sb.add_pod("first")
    add(sb, first, guarded)  # learns the real server's MAC for the node
    table = json.loads((sb.state_dir / "dhcp-servers.json").read_text())
    assert [e["mac"] for e in table["servers"].values()] == [real_mac]

    rogue_host = sb.add_pod("rogue")
    sb.attach_to_lan(rogue_host)
    rogue_mac = mac_of(rogue_host.name, "eth0")
    rogue = fake_dhcp_in(
        sb,
        rogue_host.name,
        "rogue",
        interface="eth0",
        server_ip=ROUTER_IP,  # the forgery: option 54 = the allowed server's id
        pool=list(ROGUE_POOL),
        router=ROGUE_ROUTER,
        dns=ROGUE_ROUTER,
    )
    pod = sb.add_pod("second")
    result = add(sb, pod, guarded)
    address = result["ips"][0]["address"]
    assert [e for e in events(rogue) if e.get("sent") == "OFFER"], "the rogue never answered"
    assert not in_range(address, *ROGUE_POOL), f"{address} is the rogue's"
    assert result["ips"][0].get("gateway") != ROGUE_ROUTER
    assert result["dns"]["nameservers"] == [ROUTER_IP]
    assert journal_by_key(sb)[lease_key(pod)]["server_mac"] == real_mac
    warnings = [
        line
        for line in sb.agent_logs().splitlines()
        if "WARNING" in line and rogue_mac in line and real_mac in line
    ]
    assert warnings, "no warning naming both MACs"
    assert ping(pod.name, ROUTER_IP)
    sb.cnitool("del", NET, pod, conflist=guarded)
    sb.cnitool("del", NET, first, conflist=guarded)


def test_pinned_server_mac_protects_the_first_lease(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq(no_ping=False)
    rogue_host = sb.add_pod("rogue")
    sb.attach_to_lan(rogue_host)
    rogue = fake_dhcp_in(
        sb, rogue_host.name, "rogue", interface="eth0", server_ip=ROUTER_IP,
        pool=list(ROGUE_POOL), router=ROGUE_ROUTER,
    )  # fmt: skip
    sb.start_agent()
    pin = f"{ROUTER_IP}@{fixed_lan_mac(sb).upper()}"
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "serverAllowList": [pin]})
    pod = sb.add_pod("pinned")
    address = add(sb, pod, conf)["ips"][0]["address"]
    assert [e for e in events(rogue) if e.get("sent") == "OFFER"], "the rogue never answered"
    assert not in_range(address, *ROGUE_POOL)
    assert not (sb.state_dir / "dhcp-servers.json").exists(), "a pinned server is not learned"
    sb.cnitool("del", NET, pod, conflist=conf)


# -- (b) option 121 in "node" mode -------------------------------------------------------------


def test_node_mode_drops_option_121_routes_that_bypass_the_node(sandbox: Sandbox) -> None:
    sb = sandbox
    other = "192.168.77.2"
    routes = f"0.0.0.0/1,{other},128.0.0.0/1,{other},192.168.77.128/25,{other}"
    sb.start_dnsmasq(extra=[f"--dhcp-option=121,{routes}"])
    sb.start_agent()
    conf = conflist(sb, defaultRoute="node")
    pod = sb.add_pod("r121")
    result = add(sb, pod, conf)
    in_pod = pod_routes(pod)
    assert not [r for r in in_pod if r.startswith(("0.0.0.0/1", "128.0.0.0/1"))], in_pod
    assert f"192.168.77.128/25 via {other} dev eth0" in in_pod, in_pod  # on-LAN: kept
    assert f"default via {NODE_IP} dev eth0" in in_pod, in_pod
    dsts = {r["dst"] for r in result.get("routes", [])}
    assert "0.0.0.0/1" not in dsts and "128.0.0.0/1" not in dsts, result["routes"]
    assert "192.168.77.128/25" in dsts
    logs = sb.agent_logs()
    assert "0.0.0.0/1 via 192.168.77.2" in logs and "128.0.0.0/1 via 192.168.77.2" in logs
    # the pod's off-LAN traffic goes via the node: the route the kernel picks says so
    got = run(["ip", "route", "get", "10.99.0.1"], netns=pod.name).stdout
    assert f"via {NODE_IP}" in got, got
    sb.cnitool("del", NET, pod, conflist=conf)


# -- (c) option 15/119 text ------------------------------------------------------------------


def test_domain_options_with_control_characters_never_reach_the_result(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    search = options.encode_domain_search(["good.test"]) + b"\x0bevil\nsearch\x04test\x00"
    fake_dhcp_in(
        sb,
        sb.lan,
        "fakedhcp",
        extra_options={
            "15": b"lan.test\nnameserver 203.0.113.66".hex(),
            "119": (search + options.encode_domain_search(["also.test"])).hex(),
        },
    )
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("names")
    result = add(sb, pod, conf)
    dns = result.get("dns", {})
    text = json.dumps(result)
    assert "203.0.113.66" not in text and "\\n" not in text, dns
    assert dns.get("domain", "") == ""
    assert dns.get("search") == ["good.test", "also.test"]
    logs = sb.agent_logs()
    assert "ignoring option 15" in logs and "in option 119" in logs
    sb.cnitool("del", NET, pod, conflist=conf)


# -- (d) an address moved at renewal onto a squatter ---------------------------------------------

LEASE = 8  # T1 = 4 s
POOL = ("192.168.77.150", "192.168.77.169")


def test_address_moved_at_renewal_onto_a_squatter_is_probed_and_declined(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    log = fake_dhcp_in(sb, sb.lan, "fakedhcp", lease_time=LEASE, new_address_at_renewal=True,
                       pool=list(POOL))  # fmt: skip
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("moved")
    first = add(sb, pod, conf)["ips"][0]["address"]
    squatted = str(ipaddress.IPv4Interface(first).ip + 1)
    squatter = sb.add_pod("squat")
    sb.attach_to_lan(squatter)
    run(["ip", "-n", squatter.name, "addr", "add", f"{squatted}/24", "dev", "eth0"])
    seen: set[str] = set()

    def declined() -> bool:
        seen.update(pod_ipv4(pod))
        return any(e.get("rx") == "DECLINE" for e in events(log))

    wait_for(declined, 3 * LEASE, "a DECLINE of the squatted address", interval=0.05)
    wait_for(lambda: declined() and bool(pod_ipv4(pod)), 2 * LEASE, "an address again", 0.05)
    decline = next(e for e in events(log) if e.get("rx") == "DECLINE")
    assert decline["requested"] == squatted
    assert f"{squatted}/24" not in seen, "the squatted address was put on the pod"
    assert f"{squatted}/24" not in pod_ipv4(pod)
    assert f"to {squatted}, which is in use on the link" in sb.agent_logs()
    sb.cnitool("del", NET, pod, conflist=conf)
