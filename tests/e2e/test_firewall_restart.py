"""A restarted agent asserts its pods' firewall rules before it takes requests (issue 12, 8).

The periodic re-assertion runs every 60 s; a node whose firewall changed while the agent
was down (a reload that dropped our rules, a switch to FORWARD DROP) must not drop the
re-adopted pods' traffic until then.
"""

from __future__ import annotations

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, ping, run
from tests.e2e.helpers import NET, add, conflist

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def test_restarted_agent_restores_rules_before_its_socket_exists(sandbox: Sandbox) -> None:
    sb = sandbox
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    sb.start_dnsmasq()
    agent = sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("0")
    add(sb, pod, conf)
    assert ping(pod.name, ROUTER_IP)

    agent.stop()
    # while the agent is down the node's firewall is reloaded without our rules, DROP policy
    run(["nft", "flush", "ruleset"], netns=sb.node)
    run(["iptables-nft", "-P", "FORWARD", "DROP"], netns=sb.node)
    assert not ping(pod.name, ROUTER_IP)

    # the periodic re-assertion (default 60 s) must not be what brings the pod back
    sb.start_agent()
    assert ping(pod.name, ROUTER_IP), sb.agent_logs()[-3000:]
    assert "CBD-FORWARD" in run(["iptables-nft-save"], netns=sb.node).stdout
    sb.cnitool("del", NET, pod, conflist=conf)
