"""A pod removed without a DEL reaching us (agent down, or the netns deleted under a running
agent): the agent still RELEASEs its lease at the server, from the node, and leaves no
record, lease journal or firewall rule behind; a DEL that comes later still succeeds."""

from __future__ import annotations

import ipaddress
import json

import pytest
from dhcp_leases import DhcpLeases

from testbed.sandbox import ROUTER_IP, Sandbox, parse_dnsmasq_leases, ping, run
from tests.e2e.helpers import NET, add, agent_report, conflist, container_id
from tests.reliability.lib import agent_daemon, firewall_text, state_files, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def start_server(sb: Sandbox, server: str) -> None:
    if server == "dnsmasq":
        sb.start_dnsmasq()
    else:
        sb.start_dhcpd(lease_seconds=600)  # no renewal while the test runs


def server_holds(sb: Sandbox, server: str, address: str) -> bool:
    """Whether the server has ``address`` (a CIDR) leased (active) right now."""
    ip = str(ipaddress.ip_interface(address).ip)
    if server == "dnsmasq":
        return ip in [row["ip"] for row in parse_dnsmasq_leases(sb.dnsmasq_leases_path)]
    last = {lease.ip: lease for lease in DhcpLeases(str(sb.dhcpd_leases_path)).get()}
    return ip in last and last[ip].binding_state == "active"


@pytest.mark.parametrize("server", ["dnsmasq", "dhcpd"])
def test_pod_removed_while_agent_down_is_released_at_start(sandbox: Sandbox, server: str) -> None:
    sb = sandbox
    start_server(sb, server)
    sb.start_agent()
    conf = conflist(sb)
    keeper, ghost = sb.add_pod("keep"), sb.add_pod("ghost")
    kept = add(sb, keeper, conf)["ips"][0]["address"]
    files_with_keeper = state_files(sb)
    rules_with_keeper = firewall_text(sb.node)
    lost = add(sb, ghost, conf)["ips"][0]["address"]
    assert server_holds(sb, server, lost)

    agent_daemon(sb).stop()  # SIGTERM: an agent update, say
    run(["ip", "netns", "delete", ghost.name])  # the runtime removes the pod meanwhile
    sb.start_agent()

    wait_for(lambda: not server_holds(sb, server, lost), 10, f"the server to free {lost}")
    assert "RELEASED" in sb.agent_logs()
    assert [p["containerId"] for p in agent_report(sb)["pods"]] == [container_id(keeper)]
    assert state_files(sb) == files_with_keeper
    assert firewall_text(sb.node) == rules_with_keeper
    assert server_holds(sb, server, kept)
    assert ping(keeper.name, ROUTER_IP)

    # The runtime retries the DEL later: still success, nothing changes.
    proc = sb.cnitool("del", NET, ghost, conflist=conf, check=False)
    assert proc.returncode == 0, proc.stderr
    assert state_files(sb) == files_with_keeper
    assert server_holds(sb, server, kept)


def test_del_of_a_vanished_netns_releases_the_lease(sandbox: Sandbox) -> None:
    """What `doctor` advises for a stale attachment (the plugin run by hand with
    CNI_COMMAND=DEL and an empty CNI_NETNS) releases its lease at the server."""
    sb = sandbox
    server = "dnsmasq"
    start_server(sb, server)
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("gone")
    address = add(sb, pod, conf)["ips"][0]["address"]
    run(["ip", "netns", "delete", pod.name])  # the runtime never sent DEL
    netconf = {"cniVersion": conf["cniVersion"], "name": NET, **conf["plugins"][0]}
    proc = run(
        [str(sb.plugin_wrapper())],
        netns=sb.node,
        check=False,
        input=json.dumps(netconf),
        env={
            "CNI_COMMAND": "DEL",
            "CNI_CONTAINERID": container_id(pod),
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "",
            "CNI_PATH": str(sb.cni_bin_dir),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert not server_holds(sb, server, address)
    assert agent_report(sb)["pods"] == []
    assert state_files(sb) == []
    # ... and again, as a runtime retrying it would.
    again = sb.cnitool("del", NET, pod, conflist=conf, check=False)
    assert again.returncode == 0, again.stderr
