"""Pods work on nodes whose FORWARD policy is DROP, whichever backend holds it; and the
node's rulesets are exactly as before once every pod is gone and the uplink restored."""

from __future__ import annotations

import re
import sys

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, ping, run
from tests.e2e.helpers import NET, add, conflist, container_id

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

NATIVE_DROP = """table inet hostfw {
  chain forward { type filter hook forward priority 0; policy drop; }
}
"""

SETUPS = {
    "iptables-legacy": [["iptables-legacy", "-P", "FORWARD", "DROP"]],
    "iptables-nft": [["iptables-nft", "-P", "FORWARD", "DROP"]],
    "native-nft": [["nft", "-f", "-"]],
}


def rulesets(sb: Sandbox) -> dict[str, str]:
    out = {}
    for cmd in (["iptables-legacy-save"], ["iptables-nft-save"], ["nft", "list", "ruleset"]):
        text = run(cmd, netns=sb.node).stdout
        lines = (re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines())
        out[cmd[0]] = "\n".join(line for line in lines if not line.startswith("#"))
    return out


@pytest.mark.parametrize("backend", sorted(SETUPS))
def test_pods_work_under_forward_drop_and_leave_no_trace(sandbox: Sandbox, backend: str) -> None:
    sb = sandbox
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    for cmd in SETUPS[backend]:
        run(cmd, netns=sb.node, input=NATIVE_DROP if cmd[0] == "nft" else None)
    sb.start_dnsmasq()
    before = rulesets(sb)
    sb.start_agent()
    conf = conflist(sb)
    pods = [sb.add_pod(f"{i}") for i in range(2)]
    results = [add(sb, p, conf) for p in pods]
    other_ip = results[1]["ips"][0]["address"].split("/")[0]
    assert ping(pods[0].name, ROUTER_IP), sb.agent_logs()[-2000:]
    assert ping(pods[0].name, other_ip)
    during = "\n".join(rulesets(sb).values())
    for pod in pods:
        assert f"cni-bridge-dhcp: lan {container_id(pod)} eth0" in during
    for pod in pods:
        sb.cnitool("del", NET, pod, conflist=conf)
    restore = [
        sys.executable,
        "-m",
        "cni_bridge_dhcp",
        "uplink",
        "restore",
        "--state-dir",
        str(sb.state_dir),
    ]
    run(restore, netns=sb.node)
    assert rulesets(sb) == before
    assert ping(sb.node, ROUTER_IP)
