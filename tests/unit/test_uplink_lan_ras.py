"""UplinkState.lan_ras: whether the uplink had learned from router advertisements when it
was taken over, so a pod's ADD waits for its RA although the bridge has heard none yet."""

from __future__ import annotations

from cni_bridge_dhcp.agent.datapath.netlink import RT_SCOPE_LINK, RTPROT_RA
from cni_bridge_dhcp.agent.datapath.slaac import RFC4861_RS_ANSWER, ra_wait_for
from cni_bridge_dhcp.agent.uplink.plan import (
    AF_INET,
    AF_INET6,
    AddrSnap,
    RouteSnap,
    UplinkSnapshot,
)
from cni_bridge_dhcp.agent.uplink.state import UplinkState, state_from_snapshot

MAC = "02:00:00:00:00:01"
V4 = AddrSnap(AF_INET, "192.168.77.10", 24)
STATIC6 = AddrSnap(AF_INET6, "fd77:77::10", 64)
SLAAC6 = AddrSnap(AF_INET6, "fd77:77::ff:fe00:1", 64, valid_lft=86000, preferred_lft=14000)
LL6 = AddrSnap(AF_INET6, "fe80::ff:fe00:1", 64, scope=RT_SCOPE_LINK, valid_lft=None)
RA_DEFAULT = RouteSnap(AF_INET6, None, 0, proto=RTPROT_RA, gateway="fe80::1")


def _state(addrs: tuple[AddrSnap, ...], routes: tuple[RouteSnap, ...] = ()) -> UplinkState:
    return state_from_snapshot("cni0", UplinkSnapshot("eth0", 2, MAC, 1500, True, addrs, routes))


def test_an_ipv4_or_static_ipv6_uplink_had_no_ras() -> None:
    assert not _state((V4,)).lan_ras
    assert not _state((V4, STATIC6, LL6)).lan_ras


def test_a_slaac_address_or_an_ra_route_means_the_lan_announces_ipv6() -> None:
    assert _state((V4, SLAAC6)).lan_ras
    assert _state((V4,), (RA_DEFAULT,)).lan_ras  # managed LAN: M flag, no A flag


def test_it_survives_the_journal_and_old_journals_read_as_false() -> None:
    state = _state((V4, SLAAC6))
    assert UplinkState.from_dict(state.to_dict()).lan_ras
    old = state.to_dict()
    del old["lan_ras"]
    assert not UplinkState.from_dict(old).lan_ras


def test_a_known_ipv6_lan_gets_the_rfc4861_wait_before_the_bridge_hears_an_ra() -> None:
    # no such bridge here: only the recorded knowledge can say the LAN announces IPv6
    assert ra_wait_for("cbd-no-such-bridge", lan_ras=True) == RFC4861_RS_ANSWER
    assert ra_wait_for("cbd-no-such-bridge") < RFC4861_RS_ANSWER
