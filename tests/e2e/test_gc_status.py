"""CNI 1.1 GC and STATUS, driven by testbed/cnidriver.py (libcni 1.1.2 predates them)."""

from __future__ import annotations

import pytest

from testbed import cnidriver
from testbed.sandbox import Sandbox, parse_dnsmasq_leases
from tests.e2e.helpers import NET, add, agent_report, conflist, container_id, links

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def test_gc_removes_only_attachments_not_listed(lan: Sandbox) -> None:
    sb = lan
    conf = conflist(sb, "1.0.0")  # libcni 1.1.2 cannot read 1.1.0 results
    gc_conf = {**conf, "cniVersion": "1.1.0", "name": NET}
    keep, drop = sb.add_pod("keep"), sb.add_pod("drop")
    kept = add(sb, keep, conf)["ips"][0]["address"].split("/")[0]
    dropped = add(sb, drop, conf)["ips"][0]["address"].split("/")[0]
    veths = {n for n in links(sb.node) if n.startswith("veth")}
    assert len(veths) == 2

    code, out = cnidriver.gc(
        sb.plugin_wrapper(), gc_conf, [(container_id(keep), "eth0")], netns=sb.node
    )
    assert code == 0, out
    assert len([n for n in links(sb.node) if n.startswith("veth")]) == 1
    assert links(drop.name) == ["lo"]
    assert links(keep.name) == ["lo", "eth0"]
    leased = {lease["ip"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}
    assert kept in leased and dropped not in leased
    assert [p["containerId"] for p in agent_report(sb)["pods"]] == [container_id(keep)]

    code, out = cnidriver.gc(sb.plugin_wrapper(), gc_conf, [], netns=sb.node)
    assert code == 0, out
    assert not [n for n in links(sb.node) if n.startswith("veth")]
    assert parse_dnsmasq_leases(sb.dnsmasq_leases_path) == []


def test_gc_below_1_1_0_is_refused(sandbox: Sandbox) -> None:
    code, out = cnidriver.gc(
        sandbox.plugin_wrapper(), {**conflist(sandbox, "1.0.0"), "name": NET}, []
    )
    assert code == 1 and out["code"] == 1 and "GC" in out["msg"]


def test_status_follows_the_agent(sandbox: Sandbox) -> None:
    sb = sandbox
    conf = {**conflist(sb, "1.1.0"), "name": NET}
    code, out = cnidriver.status(sb.plugin_wrapper(), conf, netns=sb.node)
    assert code == 1 and out["code"] == 50 and str(sb.agent_socket) in out["msg"]
    agent = sb.start_agent()
    code, out = cnidriver.status(sb.plugin_wrapper(), conf, netns=sb.node)
    assert code == 0 and out is None
    missing = {**conflist(sb, "1.1.0", uplinkInterface="nosuch0"), "name": NET}
    code, out = cnidriver.status(sb.plugin_wrapper(), missing, netns=sb.node)
    assert code == 1 and out["code"] == 50 and "nosuch0" in out["msg"]
    agent.stop()
    code, out = cnidriver.status(sb.plugin_wrapper(), conf, netns=sb.node)
    assert code == 1 and out["code"] == 50
