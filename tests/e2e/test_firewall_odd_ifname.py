"""The agent's periodic re-assertion never grows the rules of a pod with an odd ifname, and
ADD/CHECK/DEL agree on them, under each host firewall (issue 12, item 2).

Before the fix, ``CNI_IFNAME=a'b`` turned one jump into six within 10 s at a 2 s interval
(FORWARD and nat POSTROUTING), CHECK answered 104 and DEL 103 for ever.
"""

from __future__ import annotations

import time

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, ping, run
from tests.e2e.helpers import NET, conflist
from tests.e2e.test_firewall_drop import NATIVE_DROP, SETUPS, rulesets

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

# names the kernel and our skel accept ('%' is refused: see the last test)
IFNAMES = ["a'b", "q\"\\é'", "-j", "#x", "ééééééé", "abcdefghijklmno"]


@pytest.mark.parametrize("backend", sorted(SETUPS))
def test_odd_ifnames_under_a_short_reassert_interval(sandbox: Sandbox, backend: str) -> None:
    sb = sandbox
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    for cmd in SETUPS[backend]:
        run(cmd, netns=sb.node, input=NATIVE_DROP if cmd[0] == "nft" else None)
    # ipMasq makes the legacy nat table, which the kernel keeps once made: make it first
    run(["iptables-legacy", "-t", "nat", "-S"], netns=sb.node)
    sb.start_dnsmasq()
    before = rulesets(sb)
    sb.start_agent(extra_args=["--firewall-interval", "0.5"])
    conf = conflist(sb, ipMasq=True)
    pods = [sb.add_pod(str(i)) for i in range(len(IFNAMES))]
    for pod, ifname in zip(pods, IFNAMES, strict=True):
        sb.cnitool("add", NET, pod, conflist=conf, ifname=ifname)
    assert ping(pods[0].name, ROUTER_IP), sb.agent_logs()[-3000:]
    added = rulesets(sb)

    time.sleep(3)  # six re-assertions
    for pod, ifname in zip(pods, IFNAMES, strict=True):
        proc = sb.cnitool("check", NET, pod, conflist=conf, ifname=ifname, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rulesets(sb) == added, sb.agent_logs()[-3000:]
    assert "restored" not in sb.agent_logs()

    for pod, ifname in zip(pods, IFNAMES, strict=True):
        proc = sb.cnitool("del", NET, pod, conflist=conf, ifname=ifname, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rulesets(sb) == before


def test_an_ifname_the_kernel_would_rename_is_refused_and_leaves_nothing(sandbox: Sandbox) -> None:
    # libcni accepts '%', but the kernel takes "e%d" as a template and names the link "e0":
    # the ADD used to end in code 999 and leave a veth pair that DEL did not find.
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("0")
    node_links = run(["ip", "-br", "link"], netns=sb.node).stdout.count("\n")
    for ifname in ("e%d", "a%"):
        proc = sb.cnitool("add", NET, pod, conflist=conf, ifname=ifname, check=False)
        assert proc.returncode != 0
        assert '"code":4' in proc.stderr and "%" in proc.stderr, proc.stderr
    assert run(["ip", "-br", "link"], netns=pod.name).stdout.split()[0] == "lo"
    assert run(["ip", "-br", "link"], netns=pod.name).stdout.count("\n") == 1
    assert run(["ip", "-br", "link"], netns=sb.node).stdout.count("\n") <= node_links + 1  # +cni0
