"""A re-created pod sandbox is the same client to the LAN's DHCP server."""

from __future__ import annotations

import pytest

from testbed.sandbox import Sandbox, parse_dnsmasq_leases
from tests.e2e.helpers import NET, add, conflist, ip_json

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=media;K8S_POD_NAME=Plex_Server-0"


@pytest.mark.parametrize("stable_mac", [False, True])
def test_recreated_pod_gets_the_same_address(sandbox: Sandbox, stable_mac: bool) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "stableMac": stable_mac})
    first = sb.add_pod("s1")
    r1 = add(sb, first, conf, cni_args=ARGS)
    mac1 = ip_json(["link", "show", "eth0"], first.name)[0]["address"]
    lease = parse_dnsmasq_leases(sb.dnsmasq_leases_path)[0]
    assert lease["hostname"] == "plex-server-0"  # option 12: the pod name as a DNS label
    assert lease["mac"] == mac1
    sb.cnitool("del", NET, first, conflist=conf, cni_args=ARGS)
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []

    # Another sandbox (new netns, new container id) of the same pod.
    second = sb.add_pod("s2")
    other = sb.add_pod("other")
    r_other = add(
        sb, other, conf, cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=media;K8S_POD_NAME=other"
    )
    r2 = add(sb, second, conf, cni_args=ARGS)
    assert r2["ips"][0]["address"] == r1["ips"][0]["address"]
    assert r_other["ips"][0]["address"] != r1["ips"][0]["address"]
    mac2 = ip_json(["link", "show", "eth0"], second.name)[0]["address"]
    assert (mac2 == mac1) is stable_mac
    if stable_mac:
        assert int(mac1.split(":")[0], 16) & 0b11 == 0b10  # locally administered unicast
