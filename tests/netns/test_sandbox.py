"""The test sandbox itself: a LAN with real DHCP servers, clean teardown, the root guard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbed import cnidriver
from testbed.sandbox import (
    NODE_IP,
    POOL_END,
    POOL_START,
    ROUTER_IP,
    Pod,
    Sandbox,
    diff_snapshots,
    netns_exists,
    parse_dnsmasq_leases,
    ping,
    run,
    snapshot_root,
)

pytestmark = pytest.mark.netns

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip router=$router dns=$dns domain=$domain lease=$lease"
exit 0
"""


def _ip_as_int(address: str) -> int:
    a, b, c, d = (int(x) for x in address.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _lease_with_udhcpc(sandbox: Sandbox, pod: Pod) -> dict[str, str]:
    script = sandbox.tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    proc = run(
        ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "2", "-s", str(script)],
        netns=pod.name,
        timeout=60,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ip="))
    return dict(item.split("=", 1) for item in line.split())


def _pod_mac(pod: Pod) -> str:
    link = json.loads(run(["ip", "-j", "link", "show", "eth0"], netns=pod.name).stdout)[0]
    return str(link["address"])


def test_node_is_on_the_lan_and_routes_via_the_router(sandbox: Sandbox) -> None:
    assert ping(sandbox.node, ROUTER_IP)
    routes = json.loads(run(["ip", "-j", "route", "show", "default"], netns=sandbox.node).stdout)
    assert [(r["gateway"], r["dev"]) for r in routes] == [(ROUTER_IP, "eth0")]
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show", "eth0"], netns=sandbox.node).stdout)
    assert [a["local"] for a in addrs[0]["addr_info"]] == [NODE_IP]


def test_dnsmasq_leases_a_pool_address_with_router_dns_and_domain(sandbox: Sandbox) -> None:
    sandbox.start_dnsmasq()
    pod = sandbox.add_pod("host")
    sandbox.attach_to_lan(pod)

    lease = _lease_with_udhcpc(sandbox, pod)

    assert _ip_as_int(POOL_START) <= _ip_as_int(lease["ip"]) <= _ip_as_int(POOL_END)
    assert (lease["router"], lease["dns"], lease["domain"]) == (ROUTER_IP, ROUTER_IP, "lan.test")
    assert lease["lease"] == "120"
    rows = parse_dnsmasq_leases(sandbox.dnsmasq_leases_path)
    assert [(r["mac"], r["ip"]) for r in rows] == [(_pod_mac(pod), lease["ip"])]


def test_dhcpd_leases_with_the_configured_short_lease_time(sandbox: Sandbox) -> None:
    sandbox.start_dhcpd(lease_seconds=40)
    pod = sandbox.add_pod("host")
    sandbox.attach_to_lan(pod)

    lease = _lease_with_udhcpc(sandbox, pod)

    assert _ip_as_int(POOL_START) <= _ip_as_int(lease["ip"]) <= _ip_as_int(POOL_END)
    assert (lease["router"], lease["dns"], lease["domain"]) == (ROUTER_IP, ROUTER_IP, "lan.test")
    assert lease["lease"] == "40"
    journal = sandbox.dhcpd_leases_path.read_text()
    assert f"lease {lease['ip']} {{" in journal
    assert f"hardware ethernet {_pod_mac(pod)};" in journal


def test_pods_are_created_outside_ip_netns_exec_and_start_empty(sandbox: Sandbox) -> None:
    pod = sandbox.add_pod("empty")
    assert pod.path == f"/run/netns/{pod.name}"
    links = json.loads(run(["ip", "-j", "link", "show"], netns=pod.name).stdout)
    assert [link["ifname"] for link in links] == ["lo"]


def test_teardown_removes_namespaces_and_stops_daemons(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    box.setup()
    dnsmasq = box.start_dnsmasq()
    pod = box.add_pod("x")
    box.attach_to_lan(pod)
    # a stray process inside a sandbox namespace that no Daemon tracks
    stray = run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], netns=pod.name)
    stray_pid = int(stray.stdout.strip())
    names = [box.lan, box.node, pod.name]

    box.teardown()
    box.teardown()  # idempotent

    assert not [n for n in names if netns_exists(n)]
    assert dnsmasq.proc.poll() is not None
    assert not Path(f"/proc/{stray_pid}").exists() or _is_zombie(stray_pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_sandbox_names_are_unique_and_fit_interface_limits(tmp_path: Path) -> None:
    a, b = Sandbox(tmp_path / "a"), Sandbox(tmp_path / "b")
    assert a.prefix != b.prefix
    assert a.lan.startswith("cbd-") and a.node.startswith("cbd-")
    assert len(str(a.agent_socket)) < 108


def test_cnitool_drives_reference_plugins_through_libcni(sandbox: Sandbox) -> None:
    pod = sandbox.add_pod("ref")
    conflist: dict[str, object] = {
        "cniVersion": "1.0.0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.99.0.0/24",
                    "dataDir": str(sandbox.tmp / "host-local"),
                },
            }
        ],
    }

    added = sandbox.cnitool("add", "ref", pod, conflist=conflist, ifname="net1")
    result = json.loads(added.stdout)
    assert result["cniVersion"] == "1.0.0"
    assert [ip["address"] for ip in result["ips"]] == ["10.99.0.2/24"]
    assert ping(pod.name, "10.99.0.1")
    sandbox.cnitool("check", "ref", pod, conflist=conflist, ifname="net1")

    sandbox.cnitool("del", "ref", pod, conflist=conflist, ifname="net1")
    links = json.loads(run(["ip", "-j", "link", "show"], netns=pod.name).stdout)
    assert "net1" not in [link["ifname"] for link in links]


def test_cnitool_reports_the_plugins_error_json_and_exits_1(sandbox: Sandbox) -> None:
    pod = sandbox.add_pod("bad")
    conflist: dict[str, object] = {
        "cniVersion": "1.0.0",
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}],
    }
    proc = sandbox.cnitool("add", "bad", pod, conflist=conflist, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    error = json.loads(proc.stderr)
    assert error["code"] == 999 and "range" in error["msg"].lower()


def test_cnitool_rejects_unknown_operations(sandbox: Sandbox) -> None:
    from testbed.sandbox import ensure_cnitool

    proc = run([str(ensure_cnitool()), "frob", "x", "/run/netns/none"], check=False)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_agent_starts_in_the_node_and_answers_status(sandbox: Sandbox) -> None:
    agent = sandbox.start_agent()
    assert agent.alive()
    assert sandbox.agent_socket.exists()
    conflist = {
        "cniVersion": "1.1.0",
        "name": "lan",
        "plugins": [{"type": "cni-bridge-dhcp", "agentSocket": str(sandbox.agent_socket)}],
    }
    code, out = cnidriver.status(sandbox.plugin_wrapper(), conflist, netns=sandbox.node)
    assert (code, out) == (0, None), sandbox.agent_logs()


def test_status_without_an_agent_is_plugin_not_available(sandbox: Sandbox) -> None:
    conflist = {
        "cniVersion": "1.1.0",
        "name": "lan",
        "plugins": [{"type": "cni-bridge-dhcp", "agentSocket": str(sandbox.agent_socket)}],
    }
    code, out = cnidriver.status(sandbox.plugin_wrapper(), conflist, netns=sandbox.node)
    assert code != 0
    assert out["code"] == 50


# -- the root guard's comparison, on synthetic snapshots (never by changing root) -----------


def test_root_snapshot_is_stable_when_nothing_changes() -> None:
    assert os.geteuid() == 0
    assert diff_snapshots(snapshot_root(), snapshot_root()) == []


def test_root_guard_reports_added_links_changed_rules_and_sysctls() -> None:
    before = {
        "links": [{"ifname": "eth0", "mtu": 1500}],
        "iptables-nft": ["*filter", ":FORWARD DROP", "COMMIT"],
        "sysctl": {"net/ipv4/ip_forward": "0"},
    }
    after = {
        "links": [{"ifname": "eth0", "mtu": 1500}, {"ifname": "cni0", "mtu": 1500}],
        "iptables-nft": ["*filter", ":FORWARD DROP", "-A FORWARD -j ACCEPT", "COMMIT"],
        "sysctl": {"net/ipv4/ip_forward": "1"},
    }
    problems = "\n".join(diff_snapshots(before, after))
    assert '+ {"ifname": "cni0", "mtu": 1500}' in problems
    assert "+ -A FORWARD -j ACCEPT" in problems
    assert "net/ipv4/ip_forward: '0' -> '1'" in problems
    assert diff_snapshots(after, after) == []


def test_root_guard_ignores_packet_counters_but_not_rules() -> None:
    from testbed.sandbox import _normalize_xtables

    one = _normalize_xtables("# Generated at 10:00\n*filter\n:INPUT ACCEPT [5:300]\nCOMMIT\n")
    two = _normalize_xtables("# Generated at 10:01\n*filter\n:INPUT ACCEPT [9:900]\nCOMMIT\n")
    three = _normalize_xtables("*filter\n:INPUT DROP [9:900]\nCOMMIT\n")
    assert one == two
    assert one != three
