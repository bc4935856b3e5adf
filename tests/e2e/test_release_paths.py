"""A DEL's DHCPRELEASE reaches a DHCP server on the node itself.

The agent writes a DEL's RELEASE on the pod's bridge, from one socket it keeps, as the
frame the pod would send (dhcp/node_release.py BridgeSender); every DEL test with the LAN's
server checks that path. A DHCP server on the node itself answers from the bridge's own
MAC, and a frame the bridge device sends to that MAC is not delivered to the node: that
RELEASE must still come from inside the pod.
"""

from __future__ import annotations

import time
from pathlib import Path

from testbed.sandbox import Sandbox, parse_dnsmasq_leases, run

from .helpers import NET, add, conflist

BRIDGE = "cbrsrv"
NODE_IP = "10.31.0.1"


def _leased(path: Path) -> set[str]:
    return {row["ip"] for row in parse_dnsmasq_leases(path)}


def _wait_gone(path: Path, ip: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ip not in _leased(path):
            return True
        time.sleep(0.05)
    return False


def test_a_dhcp_server_on_the_node_itself_gets_the_release(sandbox: Sandbox) -> None:
    """dnsmasq in the node, serving the pods' bridge (no uplink): the node is the LAN's
    DHCP server, as on a small router box. Every DEL gives its lease back there."""
    sb = sandbox
    run(["ip", "link", "add", BRIDGE, "type", "bridge"], netns=sb.node)
    run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE], netns=sb.node)
    run(["ip", "link", "set", BRIDGE, "up"], netns=sb.node)
    sb.start_dnsmasq(
        netns=sb.node, interface=BRIDGE, pool=("10.31.0.50", "10.31.0.99"), router=NODE_IP
    )
    leases = sb.dnsmasq_leases_path
    sb.start_agent()
    conf = conflist(sb, bridge=BRIDGE)
    del conf["plugins"][0]["uplinkInterface"]
    for i in range(3):
        pod = sb.add_pod(f"nsrv{i}")
        result = add(sb, pod, conf)
        ip = result["ips"][0]["address"].split("/")[0]
        assert ip.startswith("10.31.0.") and ip in _leased(leases)
        sb.cnitool("del", NET, pod, conflist=conf)
        assert _wait_gone(leases, ip), f"{ip} still leased at the node's server"
