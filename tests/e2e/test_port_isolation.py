"""``portIsolation``: isolated pods reach neither each other over the bridge nor through the
node's routing, on FORWARD DROP hosts of each kind; the LAN and the node stay reachable
(issue 12, item 8).

Before the fix, the bridge's ``iif br oif br accept`` and the pod's own accept let a pod
that routes to its neighbour via the node (A -> node -> B) through; the kernel's port
isolation only stops bridged frames.
"""

from __future__ import annotations

from typing import Any

import pytest

from testbed.sandbox import NODE_IP, ROUTER_IP, Pod, Sandbox, ping, run
from tests.e2e.helpers import NET, add, conflist
from tests.e2e.test_firewall_drop import NATIVE_DROP, SETUPS, rulesets

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def two_pods(
    sb: Sandbox, backend: str, **plugin: object
) -> tuple[list[Pod], list[str], dict[str, Any], dict[str, str]]:
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    for cmd in SETUPS[backend]:
        run(cmd, netns=sb.node, input=NATIVE_DROP if cmd[0] == "nft" else None)
    sb.start_dnsmasq()
    before = rulesets(sb)
    sb.start_agent()
    conf = conflist(sb, **plugin)
    pods = [sb.add_pod(str(i)) for i in range(2)]
    ips = [add(sb, p, conf)["ips"][0]["address"].split("/")[0] for p in pods]
    return pods, ips, conf, before


def route_via_node(pods: list[Pod], ips: list[str]) -> None:
    """Each pod reaches the other through the node, as a pod may choose to."""
    for pod, other in ((pods[0], ips[1]), (pods[1], ips[0])):
        run(["ip", "route", "replace", f"{other}/32", "via", NODE_IP], netns=pod.name)


@pytest.mark.parametrize("backend", sorted(SETUPS))
def test_isolated_pods_cannot_reach_each_other_even_through_the_node(
    sandbox: Sandbox, backend: str
) -> None:
    pods, ips, conf, before = two_pods(sandbox, backend, portIsolation=True, macspoofchk=True)
    assert ping(pods[0].name, ROUTER_IP), sandbox.agent_logs()[-3000:]  # pod -> LAN
    assert ping(pods[0].name, NODE_IP)  # pod -> node
    assert not ping(pods[0].name, ips[1])  # bridged: the kernel's isolation
    route_via_node(pods, ips)
    assert not ping(pods[0].name, ips[1])  # routed by the node
    assert not ping(pods[1].name, ips[0])
    assert ping(pods[0].name, ROUTER_IP) and ping(pods[1].name, NODE_IP)
    for pod in pods:
        sandbox.cnitool("check", NET, pod, conflist=conf)
        sandbox.cnitool("del", NET, pod, conflist=conf)
    assert rulesets(sandbox) == before


@pytest.mark.parametrize("backend", sorted(SETUPS))
def test_pods_without_isolation_still_reach_each_other(sandbox: Sandbox, backend: str) -> None:
    pods, ips, _, _ = two_pods(sandbox, backend)
    assert ping(pods[0].name, ips[1])
    route_via_node(pods, ips)
    assert ping(pods[0].name, ips[1])
