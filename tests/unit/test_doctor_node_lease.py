"""doctor's node-lease finding: which case holds for the node's DHCP-leased address."""

from __future__ import annotations

from cni_bridge_dhcp.agent.uplink.dhcpclients import NodeDhcp, PrevClient
from cni_bridge_dhcp.ops.doctor.checks.nodelease import NodeLeaseFacts, check_node_lease

MAC = "52:54:00:12:34:56"


def _facts(**kw: object) -> NodeLeaseFacts:
    base: dict[str, object] = dict(
        uplink="eth0", bridge="cni0", mac=MAC, taken_over=False, preconfigured=False,
        dynamic="192.0.2.10/24", valid_lft=300, record=None, now=1000.0,
    )  # fmt: skip
    base.update(kw)
    return NodeLeaseFacts(**base)  # type: ignore[arg-type]


def test_static_address_is_fine() -> None:
    f = check_node_lease(_facts(dynamic=None, valid_lft=None))
    assert f.ok and "static" in f.detail


def test_before_takeover_networkd_means_refusal() -> None:
    f = check_node_lease(_facts(clients=[PrevClient("systemd-networkd", source="/run/x/2")]))
    assert not f.ok and "code 7" in f.problem and "bridges:" in f.fix


def test_before_takeover_udhcpc_will_be_paused() -> None:
    f = check_node_lease(_facts(clients=[PrevClient("udhcpc", pid=7)]))
    assert f.ok and "udhcpc (pid 7)" in f.detail and "SIGSTOP" in f.detail


def test_after_takeover_kept_or_not() -> None:
    rec = NodeDhcp("eth0", "cni0", MAC, "192.0.2.10/24", "01aa", 300,
                   paused=[PrevClient("dhclient", pid=9)])  # fmt: skip
    kept = check_node_lease(_facts(taken_over=True, record=rec, kept_until=1100.0))
    assert kept.ok and "kept by the agent" in kept.detail and "dhclient (pid 9)" in kept.detail
    stale = check_node_lease(_facts(taken_over=True, record=rec, kept_until=900.0))
    assert not stale.ok and "not keeping" in stale.problem
    unrecorded = check_node_lease(_facts(taken_over=True))
    assert not unrecorded.ok and "nothing renews" in unrecorded.problem
