"""The drop-in IPAM role: our DHCP agent serving the reference macvlan plugin."""

from __future__ import annotations

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, parse_dnsmasq_leases, ping
from tests.e2e.helpers import NET, add, agent_report, links, pod_routes

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def test_macvlan_with_our_ipam_leases_routes_and_releases(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = {
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [
            {
                "type": "macvlan",
                "master": "eth0",
                "mode": "bridge",
                "ipam": {"type": "cni-bridge-dhcp", "agentSocket": str(sb.agent_socket)},
            }
        ],
    }
    pod = sb.add_pod("mv")
    result = add(sb, pod, conf, cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=mv")
    address = result["ips"][0]["address"]
    assert address.startswith("192.168.77.") and result["ips"][0]["gateway"] == ROUTER_IP
    assert f"default via {ROUTER_IP} dev eth0" in pod_routes(pod)
    assert ping(pod.name, ROUTER_IP)
    leases = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    assert [lease["ip"] for lease in leases] == [address.split("/")[0]]
    assert agent_report(sb)["pods"][0]["lease"]["state"] == "BOUND"

    ok = sb.cnitool("check", NET, pod, conflist=conf, check=False)
    assert ok.returncode == 0, ok.stderr
    sb.cnitool("del", NET, pod, conflist=conf)
    assert links(pod.name) == ["lo"]
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []
    assert agent_report(sb)["pods"] == []
