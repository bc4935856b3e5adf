"""The node's link to the LAN flaps while pods hold short leases: first the LAN side
(the switch port: ``node0`` in the lan namespace), then the node's own ``eth0`` (the
uplink, a port of the bridge after takeover). Each outage covers the pods' T1, so the
renewals fail while it lasts; they must succeed after it, before T2, with the same
addresses, and the pods must reach the LAN again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, dhcpd_config, ping, run
from tests.e2e.helpers import add, conflist
from tests.reliability.lib import (
    journal_by_key,
    lease_key,
    pod_ipv4,
    wait_for,
)

LEASE = 20  # T1 10 s, T2 17.5 s
DOWN_BEFORE_T1 = 2.0
DOWN_FOR = 6.0
PODS = 3


@pytest.mark.scenario("uplink-flap")
@pytest.mark.timeout(300)
def test_link_flaps_across_t1_keep_leases_and_connectivity(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dhcpd(config=dhcpd_config(lease_seconds=LEASE))
    sb.start_agent()
    conf = conflist(sb)
    pods = [sb.add_pod(f"f{i}") for i in range(PODS)]
    addresses = {p.name: add(sb, p, conf)["ips"][0]["address"] for p in pods}
    keys = {p.name: lease_key(p) for p in pods}

    def records() -> dict[str, dict[str, Any]]:
        by_key = journal_by_key(sb)
        return {name: by_key[key] for name, key in keys.items()}

    flaps = [("lan-side peer node0", sb.lan, "node0"), ("node uplink eth0", sb.node, "eth0")]
    back_after: list[float] = []
    for label, netns, link in flaps:
        before = records()
        first_t1 = min(r["renew_at"] for r in before.values())
        time.sleep(max(0.0, first_t1 - DOWN_BEFORE_T1 - time.time()))
        run(["ip", "-n", netns, "link", "set", link, "down"])
        try:
            time.sleep(DOWN_FOR)
            assert all(pod_ipv4(p) == [addresses[p.name]] for p in pods), "address dropped"
        finally:
            run(["ip", "-n", netns, "link", "set", link, "up"])
        up_at, up_wall = time.monotonic(), time.time()
        for pod in pods:
            name = pod.name
            wait_for(
                lambda name=name, before=before: (  # type: ignore[misc]
                    records()[name]["bound_at"] > before[name]["bound_at"]
                ),
                LEASE,
                f"{name} to renew after the {label} flap",
            )
        after = records()
        for pod in pods:
            cur, prev = after[pod.name], before[pod.name]
            assert cur["address"] == addresses[pod.name] and cur["state"] == "BOUND"
            assert cur["bound_at"] < prev["rebind_at"], f"{pod.name} renewed only after T2"
            # T1 fell inside the outage: the renewal that worked was sent after it
            assert prev["renew_at"] < up_wall <= cur["bound_at"] + 0.5
            assert pod_ipv4(pod) == [addresses[pod.name]]
        wait_for(lambda: all(ping(p.name, ROUTER_IP) for p in pods), 15, "pods to reach the LAN")
        back_after.append(round(time.monotonic() - up_at, 1))
        assert ping(sb.node, ROUTER_IP)
    logs = sb.agent_logs()
    assert "state=EXPIRED" not in logs and "state=REBINDING" not in logs
    figures["flaps"] = ", ".join(label for label, _, _ in flaps)
    figures["pods"] = PODS
    figures["seconds down (covering T1)"] = DOWN_FOR
    figures["leases lost"] = 0
    figures["seconds from link up to renewed + reachable"] = back_after
