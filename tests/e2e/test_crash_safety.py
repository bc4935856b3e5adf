"""SIGKILL of the agent in the middle of an ADD, then a restart: no half pods remain."""

from __future__ import annotations

import json

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, parse_dnsmasq_leases, ping, run
from tests.e2e.helpers import NET, add, agent_report, conflist, links

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

ADD_STEPS = ["add:pending", "add:veth", "add:lease", "add:routes", "add:rules"]


def nft_and_iptables(sb: Sandbox) -> str:
    return "".join(
        run(cmd, netns=sb.node, check=False).stdout
        for cmd in (["nft", "list", "ruleset"], ["iptables-legacy-save"])
    )


@pytest.mark.parametrize("step", ADD_STEPS)
def test_sigkill_during_add_leaves_nothing_after_restart(sandbox: Sandbox, step: str) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    conf = conflist(sb)
    # A first pod makes the bridge, uplink takeover and shared rules exist.
    sb.start_agent()
    first = sb.add_pod("first")
    add(sb, first, conf)
    rules_with_one_pod = nft_and_iptables(sb)
    agent = [d for d in sb.daemons if d.name == "agent"][-1]
    agent.stop()

    sb.start_agent(env={"CNI_BRIDGE_DHCP_FAULT": step})
    pod = sb.add_pod("crash")
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0
    assert json.loads(proc.stderr.strip().splitlines()[-1])["code"] in (5, 11)

    sb.start_agent()
    assert links(pod.name) == ["lo"], f"pod interface left behind after a crash at {step}"
    assert len([n for n in links(sb.node) if n.startswith("veth")]) == 1
    leased = parse_dnsmasq_leases(sb.dnsmasq_leases_path)
    assert len(leased) == 1, f"lease leaked at the server after a crash at {step}: {leased}"
    assert [p["containerId"] for p in agent_report(sb)["pods"]] == [
        p["containerId"] for p in agent_report(sb)["pods"] if p["state"] == "ready"
    ]
    assert len(agent_report(sb)["pods"]) == 1
    assert nft_and_iptables(sb) == rules_with_one_pod
    assert ping(sb.node, ROUTER_IP)
    # The crashed pod can be added again cleanly.
    again = add(sb, pod, conf)
    assert again["ips"]
    assert ping(first.name, ROUTER_IP)


def test_agent_restart_keeps_pods_and_leases(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    conf = conflist(sb)
    sb.start_agent()
    pods = [sb.add_pod(f"r{i}") for i in range(3)]
    before = {p.name: add(sb, p, conf)["ips"][0]["address"] for p in pods}
    agent = [d for d in sb.daemons if d.name == "agent"][-1]
    agent.proc.kill()
    agent.proc.wait(10)
    sb.start_agent()
    report = agent_report(sb)
    assert sorted(p["lease"]["address"] for p in report["pods"]) == sorted(before.values())
    assert all(p["lease"]["state"] == "BOUND" for p in report["pods"])
    for pod in pods:
        assert ping(pod.name, ROUTER_IP)
        sb.cnitool("del", NET, pod, conflist=conf)
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []
