"""SIGKILL of the agent with 100 live pods on short ISC dhcpd leases, then a restart:
every lease is re-adopted with its address and renewed on time (after T1, before T2)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from dhcp_leases import DhcpLeases

from testbed.sandbox import ROUTER_IP, Sandbox, dhcpd_config, ping
from tests.e2e.helpers import NET, add, agent_report, conflist
from tests.reliability.lib import (
    journal_by_key,
    kill_agent,
    lease_key,
    pod_ipv4,
    veths,
    wait_for,
)

PODS = 100
IN_FLIGHT = 20
LEASE = 30  # T1 15 s, T2 26.25 s
POOL = (("192.168.77.20", "192.168.77.249"),)  # room for 100 pods and then some


def dhcpd_active(sb: Sandbox) -> dict[str, Any]:
    last = {x.ip: x for x in DhcpLeases(str(sb.dhcpd_leases_path)).get()}
    return {ip: x for ip, x in last.items() if x.binding_state == "active"}


@pytest.mark.scenario("restart-100")
@pytest.mark.timeout(600)
def test_agent_restart_with_100_pods_readopts_and_renews_every_lease(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dhcpd(config=dhcpd_config(lease_seconds=LEASE, ranges=POOL))
    sb.start_agent()
    conf = conflist(sb)
    pods = [sb.add_pod(f"r{i}") for i in range(PODS)]
    started = time.monotonic()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        results = list(pool.map(lambda p: add(sb, p, conf, timeout=120), pods))
    add_seconds = time.monotonic() - started
    addresses = {lease_key(p): r["ips"][0]["address"] for p, r in zip(pods, results, strict=True)}
    assert len(set(addresses.values())) == PODS

    kill_agent(sb)
    before = journal_by_key(sb)
    assert {k: r["address"] for k, r in before.items()} == addresses
    killed_at = time.time()
    started = time.monotonic()
    sb.start_agent()
    restart_seconds = time.monotonic() - started

    report = agent_report(sb)
    adopted = {p["key"]: p["lease"] for p in report["pods"] if p["lease"] is not None}
    assert len(report["pods"]) == PODS
    assert {k: lease["address"] for k, lease in adopted.items()} == addresses
    assert all(lease["state"] in ("BOUND", "RENEWING") for lease in adopted.values())
    assert all(pod_ipv4(p) == [addresses[lease_key(p)]] for p in pods)

    def renewed() -> bool:
        now = journal_by_key(sb)
        return all(now[k]["bound_at"] > before[k]["bound_at"] for k in before)

    last_t1 = max(r["renew_at"] for r in before.values())
    wait_for(renewed, max(0.0, last_t1 - time.time()) + 15, "every lease to renew", 0.5)
    after = journal_by_key(sb)
    late = []
    for key, prev in before.items():
        cur = after[key]
        assert cur["address"] == prev["address"] and cur["state"] == "BOUND", key
        # renewed by the new agent: after the restart, after T1, before T2
        assert cur["bound_at"] >= max(killed_at, prev["renew_at"] - 0.5), key
        assert cur["bound_at"] < prev["rebind_at"], f"{key} renewed after T2"
        late.append(cur["bound_at"] - prev["renew_at"])
    logs = sb.agent_logs()
    assert "state=EXPIRED" not in logs and "state=REBINDING" not in logs
    assert logs.count("state=ADOPTED") == PODS
    active = dhcpd_active(sb)
    assert {a.split("/")[0] for a in addresses.values()} <= set(active)
    for pod in pods[:: PODS // 5]:
        assert ping(pod.name, ROUTER_IP)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(lambda p: sb.cnitool("del", NET, p, conflist=conf, timeout=120), pods))
    assert veths(sb.node) == []
    wait_for(lambda: not dhcpd_active(sb), 10, "every lease freed at dhcpd")
    figures["pods"] = PODS
    figures["ADD seconds (20 in flight)"] = round(add_seconds, 1)
    figures["agent restart to ready (s)"] = round(restart_seconds, 1)
    figures["leases re-adopted / same address"] = f"{len(adopted)}/{PODS}"
    figures["renewal after T1: max delay (s)"] = round(max(late), 2)
    figures["renewed before T2"] = f"{PODS}/{PODS}"
