"""Two live sandboxes of one pod (a force-deleted StatefulSet pod re-created before its old
sandbox is torn down) are two DHCP clients: distinct client ids, distinct leases, and
neither asks for (or takes) the other's address."""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dhcp_leases import DhcpLeases

from testbed.sandbox import Pod, Sandbox, parse_dnsmasq_leases
from tests.e2e.helpers import NET, add, conflist, ip_json

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=pg-0"
LEASE = 8  # dhcpd lease seconds: T1 at 4 s, so a test sees renewals within seconds


def pod_address(pod: Pod) -> list[str]:
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in ip_json(["addr", "show", "dev", "eth0"], pod.name)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]


def pod_mac(pod: Pod) -> str:
    return str(ip_json(["link", "show", "eth0"], pod.name)[0]["address"])


@pytest.mark.parametrize("stable_mac", [False, True])
def test_two_live_sandboxes_get_two_leases(sandbox: Sandbox, stable_mac: bool) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "stableMac": stable_mac})
    first, second = sb.add_pod("s1"), sb.add_pod("s2")
    a1 = add(sb, first, conf, cni_args=ARGS)["ips"][0]["address"]
    a2 = add(sb, second, conf, cni_args=ARGS)["ips"][0]["address"]
    assert a1 != a2
    mac1 = pod_mac(first)
    assert pod_mac(second) != mac1  # one bridge, two live ports: never one MAC
    leases = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    assert sorted(row["ip"] for row in leases) == sorted(
        str(ipaddress.ip_interface(a).ip) for a in (a1, a2)
    ), leases
    assert len({row["client_id"] for row in leases}) == 2, leases
    assert pod_address(first) == [a1]
    assert pod_address(second) == [a2]
    assert "DECLINE" not in sb.agent_logs()

    # The old sandbox goes: the new one keeps its lease (and its address).
    sb.cnitool("del", NET, first, conflist=conf, cni_args=ARGS)
    leases = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    assert [row["ip"] for row in leases] == [str(ipaddress.ip_interface(a2).ip)], leases
    assert pod_address(second) == [a2]

    # When both are gone, the next sandbox is the pod's usual identity again: the
    # address book still points it at the first sandbox's address.
    sb.cnitool("del", NET, second, conflist=conf, cni_args=ARGS)
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []
    third = sb.add_pod("s3")
    assert add(sb, third, conf, cni_args=ARGS)["ips"][0]["address"] == a1
    assert (pod_mac(third) == mac1) is stable_mac
    (row,) = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    assert bytes.fromhex(row["client_id"].replace(":", "")) == b"\x00k8s:db/pg-0/lan/eth0"


def test_two_live_sandboxes_keep_their_addresses_across_renewals(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dhcpd(lease_seconds=LEASE)
    sb.start_agent()
    conf = conflist(sb)
    first, second = sb.add_pod("s1"), sb.add_pod("s2")
    a1 = add(sb, first, conf, cni_args=ARGS)["ips"][0]["address"]
    a2 = add(sb, second, conf, cni_args=ARGS)["ips"][0]["address"]
    assert a1 != a2
    renewals_before = sb.agent_logs().count("state=RENEWING")
    # Two renewals each (T1 = LEASE/2), sampling the pods' addresses all along: a NAKed
    # renewal removes the address for a moment.
    deadline = time.monotonic() + LEASE * 1.3
    while time.monotonic() < deadline:
        assert pod_address(first) == [a1]
        assert pod_address(second) == [a2]
        time.sleep(0.05)
    logs = sb.agent_logs()
    assert logs.count("state=RENEWING") >= renewals_before + 2, logs
    assert "state=EXPIRED" not in logs and "NAK" not in logs, logs
    active = {
        lease.ip: lease
        for lease in DhcpLeases(str(sb.dhcpd_leases_path)).get()
        if lease.binding_state == "active"
    }
    assert sorted(active) == sorted(str(ipaddress.ip_interface(a).ip) for a in (a1, a2))


def test_sandboxes_added_at_once_take_distinct_identities(sandbox: Sandbox) -> None:
    """Three sandboxes of one pod ADDed concurrently: one takes the pod's identity, each
    of the others its own (the claim is atomic, not "whoever leases first")."""
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb)
    pods = [sb.add_pod(f"c{i}") for i in range(3)]
    with ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(lambda p: add(sb, p, conf, cni_args=ARGS), pods))
    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == 3, addresses
    leases = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    ids = sorted(bytes.fromhex(row["client_id"].replace(":", "")) for row in leases)
    assert len(set(ids)) == 3, leases
    assert ids.count(b"\x00k8s:db/pg-0/lan/eth0") == 1, ids
    for pod, address in zip(pods, addresses, strict=True):
        assert pod_address(pod) == [address]
