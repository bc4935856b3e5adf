"""End to end through the real libcni client: pods on the LAN via the node's bridge."""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.sandbox import (
    NODE_IP,
    POOL_END,
    POOL_START,
    ROUTER_IP,
    Sandbox,
    parse_dnsmasq_leases,
    run,
)
from tests.e2e.helpers import NET, add, conflist, container_id, ip_json, links, ping, pod_routes

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def in_pool(address: str) -> bool:
    ip = ipaddress.ip_interface(address).ip
    return ipaddress.ip_address(POOL_START) <= ip <= ipaddress.ip_address(POOL_END)


def test_pods_get_lan_addresses_and_node_pointing_routes(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    node_mac = ip_json(["link", "show", "eth0"], sb.node)[0]["address"]
    node_routes_before = ip_json(["route", "show", "table", "all"], sb.node)
    sb.start_agent()
    conf = conflist(sb)
    p1, p2 = sb.add_pod("a"), sb.add_pod("b")
    r1 = add(sb, p1, conf, cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-a")
    r2 = add(sb, p2, conf, cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-b")

    a1, a2 = r1["ips"][0]["address"], r2["ips"][0]["address"]
    log = sb.agent_log.read_text()
    assert re.search(
        rf"ADD {container_id(p1)} pod=default/web-a if=eth0 ok: {a1} in \d+\.\d+ s", log
    )
    assert in_pool(a1) and in_pool(a2) and a1 != a2
    assert r1["ips"][0]["gateway"] == NODE_IP
    assert {"dst": "0.0.0.0/0", "gw": NODE_IP} in r1["routes"]
    assert r1["dns"]["nameservers"] == [ROUTER_IP]
    sandbox_iface = [i for i in r1["interfaces"] if i.get("sandbox")]
    assert sandbox_iface and sandbox_iface[0]["name"] == "eth0"

    routes = pod_routes(p1)
    assert f"{NODE_IP} dev eth0 scope link" in routes
    assert f"default via {NODE_IP} dev eth0" in routes

    # The node's uplink is now a bridge port; its address, MAC and routes are on the bridge.
    eth0 = ip_json(["-d", "link", "show", "eth0"], sb.node)[0]
    assert eth0.get("master") == "cni0"
    cni0 = ip_json(["addr", "show", "cni0"], sb.node)[0]
    assert cni0["address"] == node_mac
    assert any(a["local"] == NODE_IP for a in cni0["addr_info"])
    node_routes = ip_json(["route"], sb.node)
    assert any(
        r["dst"] == "default" and r.get("gateway") == ROUTER_IP and r["dev"] == "cni0"
        for r in node_routes
    )
    assert len(
        [
            r
            for r in ip_json(["route", "show", "table", "all"], sb.node)
            if r.get("dev") in ("cni0", "eth0")
        ]
    ) >= len([r for r in node_routes_before if r.get("dev") == "eth0"])

    ip1, ip2 = (str(ipaddress.ip_interface(a).ip) for a in (a1, a2))
    assert ping(p1.name, ROUTER_IP), sb.agent_logs()[-3000:]
    assert ping(p1.name, NODE_IP)
    assert ping(p1.name, ip2) and ping(p2.name, ip1)
    assert ping(sb.node, ROUTER_IP)
    assert ping(sb.lan, ip1)  # the LAN reaches the pod directly

    leases = {lease["ip"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}
    assert {ip1, ip2} <= leases

    for pod in (p1, p2):
        sb.cnitool("del", NET, pod, conflist=conf)
    assert not [name for name in links(sb.node) if name.startswith("veth")]
    assert links(p1.name) == ["lo"]
    leases = {lease["ip"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}
    assert not ({ip1, ip2} & leases), "DEL must release the lease at the server"


def test_del_is_idempotent_and_survives_a_vanished_netns(lan: Sandbox) -> None:
    sb = lan
    conf = conflist(sb)
    pod = sb.add_pod("gone")
    add(sb, pod, conf)
    sb.cnitool("del", NET, pod, conflist=conf)
    sb.cnitool("del", NET, pod, conflist=conf)  # twice: still success
    other = sb.add_pod("vanish")
    add(sb, other, conf)
    from testbed.sandbox import run

    run(["ip", "netns", "del", other.name])
    other_path_gone = sb.cnitool("del", NET, other, conflist=conf, check=False)
    assert other_path_gone.returncode == 0, other_path_gone.stderr
    assert not [n for n in links(sb.node) if n.startswith("veth")]


def test_check_passes_then_reports_drift(lan: Sandbox) -> None:
    sb = lan
    conf = conflist(sb)
    pod = sb.add_pod("chk")
    add(sb, pod, conf)
    ok = sb.cnitool("check", NET, pod, conflist=conf, check=False)
    assert ok.returncode == 0, ok.stderr
    from testbed.sandbox import run

    run(["ip", "route", "del", "default"], netns=pod.name)
    bad = sb.cnitool("check", NET, pod, conflist=conf, check=False)
    assert bad.returncode != 0
    assert "route 0.0.0.0/0" in bad.stderr + bad.stdout
    sb.cnitool("del", NET, pod, conflist=conf)


def test_add_fails_cleanly_when_the_interface_exists(lan: Sandbox) -> None:
    sb = lan
    conf = conflist(sb)
    pod = sb.add_pod("dup")
    from testbed.sandbox import run

    run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"], netns=pod.name)
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr + proc.stdout
    assert re.search(
        rf"ADD {container_id(pod)} pod=-/- if=eth0 failed: code 4: .*already exists",
        sb.agent_log.read_text(),
    )
    assert not [n for n in links(sb.node) if n.startswith("veth")]
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []


def test_agent_down_is_code_11_and_nothing_changes(sandbox: Sandbox) -> None:
    sb = sandbox
    conf = conflist(sb)
    pod = sb.add_pod("nodaemon")
    before = ip_json(["addr"], sb.node)
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert err["code"] == 11 and str(sb.agent_socket) in err["msg"]
    assert ip_json(["addr"], sb.node) == before
    assert links(pod.name) == ["lo"]


def test_ten_concurrent_adds_one_takeover_ten_leases(lan: Sandbox) -> None:
    sb = lan
    conf = conflist(sb)
    pods = [sb.add_pod(f"c{i}") for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda p: add(sb, p, conf, timeout=120), pods))
    addresses = {r["ips"][0]["address"] for r in results}
    assert len(addresses) == 10 and all(in_pool(a) for a in addresses)
    assert sb.agent_log.read_text().count("uplink eth0 taken over into bridge") == 1
    for pod in pods[:3]:
        assert ping(pod.name, ROUTER_IP)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda p: sb.cnitool("del", NET, p, conflist=conf), pods))
    assert not [n for n in links(sb.node) if n.startswith("veth")]
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []
    # No FORWARD filter on this node, so no rules were needed (see test_firewall_drop.py).
    assert "cni-bridge-dhcp: lan" not in run(["nft", "list", "ruleset"], netns=sb.node).stdout


def test_uplink_restore_returns_the_node_to_its_snapshot(sandbox: Sandbox) -> None:
    from testbed.sandbox import run

    sb = sandbox
    sb.start_dnsmasq()
    before_addr = ip_json(["addr", "show", "eth0"], sb.node)[0]
    v4_routes = ["-4", "route", "show", "table", "all"]
    before_routes = sorted(map(json.dumps, ip_json(v4_routes, sb.node)))
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("rest")
    add(sb, pod, conf)
    cli = [
        sys.executable,
        "-m",
        "cni_bridge_dhcp",
        "uplink",
        "restore",
        "--state-dir",
        str(sb.state_dir),
    ]
    refused = run(cli, netns=sb.node, check=False)
    assert refused.returncode == 1 and "pods" in refused.stderr.lower()
    sb.cnitool("del", NET, pod, conflist=conf)
    done = run(cli, netns=sb.node, check=False)
    assert done.returncode == 0, done.stderr
    after_addr = ip_json(["addr", "show", "eth0"], sb.node)[0]
    assert after_addr["address"] == before_addr["address"]
    assert [a["local"] for a in after_addr["addr_info"]] == [
        a["local"] for a in before_addr["addr_info"]
    ]
    assert "cni0" not in links(sb.node)
    assert sorted(map(json.dumps, ip_json(v4_routes, sb.node))) == before_routes
    assert ping(sb.node, ROUTER_IP)
