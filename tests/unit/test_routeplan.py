"""Route replay planning, address ordering and uplink selection, from captured snapshots."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.uplink.plan import (
    AF_INET,
    AF_INET6,
    AddrSnap,
    NextHop,
    RouteSnap,
    UplinkSnapshot,
    addresses_to_move,
    bridge_label,
    default_gateway,
    eui64_link_local,
    is_kernel_ll,
    primary_ipv4,
    replay_plan,
    select_uplink,
)
from cni_bridge_dhcp.cni.errors import CNIError
from testbed.ipjson import addresses_from_ip_json, routes_from_ip_json

# Captured with `ip -j -4|-6 route show table all` and `ip -j addr show dev eth0` on a node
# netns with a /32 host route, a gateway route behind it in table 1000, a second address
# and a secondary, routes with metrics and a route MTU, two IPv4 defaults, IPv6 routes.
ROUTES4 = json.loads("""[
{"dst":"default","gateway":"192.168.77.1","dev":"eth0","table":"1000","metric":10,"flags":[]},
{"dst":"10.10.0.0/16","gateway":"172.31.1.1","dev":"eth0","table":"1000","protocol":"dhcp","flags":[]},
{"dst":"default","gateway":"192.168.77.1","dev":"eth0","flags":[]},
{"dst":"default","gateway":"192.168.77.254","dev":"eth0","metric":200,"flags":[]},
{"dst":"10.9.0.0/16","gateway":"192.168.77.1","dev":"eth0","prefsrc":"192.168.77.10","metric":50,"flags":[]},
{"dst":"10.11.0.0/16","gateway":"192.168.77.1","dev":"eth0","protocol":"static","flags":[],"metrics":[{"mtu":1400}]},
{"dst":"172.31.1.1","dev":"eth0","scope":"link","flags":[]},
{"dst":"192.168.77.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.168.77.10","flags":[]},
{"type":"local","dst":"10.5.0.1","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.5.0.1","flags":[]},
{"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},
{"type":"local","dst":"192.168.77.10","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"192.168.77.10","flags":[]},
{"type":"broadcast","dst":"192.168.77.255","dev":"eth0","table":"local","protocol":"kernel","scope":"link","prefsrc":"192.168.77.10","flags":[]}
]""")  # fmt: skip
ROUTES6 = json.loads("""[
{"dst":"2001:db8:77::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},
{"dst":"2001:db8:99::/64","gateway":"fe80::1","dev":"eth0","metric":1024,"flags":[],"pref":"high"},
{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},
{"dst":"default","gateway":"2001:db8:77::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"},
{"dst":"default","gateway":"fe80::5","dev":"eth0","protocol":"ra","metric":1024,"flags":[],"pref":"medium"},
{"type":"local","dst":"2001:db8:77::10","dev":"eth0","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},
{"type":"multicast","dst":"ff00::/8","dev":"eth0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}
]""")  # fmt: skip
ADDRS = json.loads("""[{"ifindex":2,"ifname":"eth0","address":"16:a7:6d:b9:0c:13","addr_info":[
{"family":"inet","local":"192.168.77.10","prefixlen":24,"scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},
{"family":"inet","local":"10.5.0.1","prefixlen":32,"scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},
{"family":"inet","local":"192.168.77.11","prefixlen":24,"scope":"global","secondary":true,"label":"eth0:1","valid_life_time":4294967295,"preferred_life_time":4294967295},
{"family":"inet6","local":"2001:db8:77::20","prefixlen":64,"scope":"global","nodad":true,"dynamic":true,"valid_life_time":3600,"preferred_life_time":1800},
{"family":"inet6","local":"2001:db8:77::10","prefixlen":64,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},
{"family":"inet6","local":"fe80::14a7:6dff:feb9:c13","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]""")  # fmt: skip
MAC = "16:a7:6d:b9:0c:13"


def captured() -> list[RouteSnap]:
    return routes_from_ip_json(ROUTES4, AF_INET) + routes_from_ip_json(ROUTES6, AF_INET6)


def name(r: RouteSnap) -> str:
    return r.describe()


def test_plan_puts_on_link_routes_first_and_defaults_last() -> None:
    plan = [name(r) for r in replay_plan(captured(), "eth0")]
    assert plan == [
        "172.31.1.1/32 dev eth0",  # the /32 the table-1000 gateway route needs
        "2001:db8:99::/64 via fe80::1 dev eth0 metric 1024",
        "10.11.0.0/16 via 192.168.77.1 dev eth0",  # same length: main table, lower metric first
        "10.9.0.0/16 via 192.168.77.1 dev eth0 metric 50",
        "10.10.0.0/16 via 172.31.1.1 dev eth0 table 1000",
        "default via 192.168.77.1 dev eth0",
        "default via 192.168.77.254 dev eth0 metric 200",
        "default via 192.168.77.1 dev eth0 table 1000 metric 10",
        "default via 2001:db8:77::1 dev eth0 metric 1024",
    ]


def test_plan_skips_kernel_and_router_advertised_routes() -> None:
    plan = replay_plan(captured(), "eth0")
    assert all(r.proto not in (2, 9) for r in plan)
    dsts = {(r.dst, r.dst_len) for r in plan}
    assert ("192.168.77.0", 24) not in dsts  # follows the address
    assert ("fe80::", 64) not in dsts
    assert not any(r.gateway == "fe80::5" for r in plan)  # proto ra
    assert not any(r.table == 255 for r in plan)


def test_plan_keeps_metric_proto_src_table_and_route_metrics() -> None:
    by_dst = {(r.dst, r.table, r.priority): r for r in replay_plan(captured(), "eth0")}
    r = by_dst[("10.9.0.0", 254, 50)]
    assert r.prefsrc == "192.168.77.10" and r.proto == 3
    assert by_dst[("10.11.0.0", 254, None)].metrics == (("mtu", 1400),)
    assert by_dst[("10.11.0.0", 254, None)].proto == 4  # static
    assert by_dst[("10.10.0.0", 1000, None)].proto == 16  # dhcp
    assert by_dst[("2001:db8:99::", 254, 1024)].pref == 1  # high
    assert by_dst[("172.31.1.1", 254, None)].scope == 253


def test_plan_ignores_other_devices_and_follows_multipath() -> None:
    other = RouteSnap(family=AF_INET, dst="10.0.0.0", dst_len=8, gateway="10.1.1.1", dev="eth1")
    mp = RouteSnap(
        family=AF_INET,
        dst="10.20.0.0",
        dst_len=16,
        multipath=(NextHop(gateway="192.168.77.1", dev="eth0"), NextHop("10.1.1.1", "eth1")),
    )
    plan = replay_plan([other, mp], "eth0")
    assert plan == [mp]
    moved = plan[0].on_device("eth0", "cni0")
    assert [nh.dev for nh in moved.multipath] == ["cni0", "eth1"]


@settings(max_examples=60, deadline=None)
@given(st.permutations(captured()))
def test_plan_does_not_depend_on_dump_order(routes: list[RouteSnap]) -> None:
    assert replay_plan(routes, "eth0") == replay_plan(captured(), "eth0")


@settings(max_examples=60, deadline=None)
@given(st.permutations(captured()))
def test_every_gateway_is_on_link_before_its_route(routes: list[RouteSnap]) -> None:
    connected = [ipaddress.ip_network("192.168.77.0/24"), ipaddress.ip_network("2001:db8:77::/64")]
    seen: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(connected)
    for r in replay_plan(routes, "eth0"):
        if r.gateway:
            gw = ipaddress.ip_address(r.gateway)
            assert gw.is_link_local or any(gw in net for net in seen), r.describe()
        else:
            seen.append(ipaddress.ip_network(f"{r.dst}/{r.dst_len}"))
    plan = replay_plan(routes, "eth0")
    first_default = next(i for i, r in enumerate(plan) if r.is_default)
    assert all(r.is_default for r in plan[first_default:])


def test_default_gateway_is_lowest_metric_main_table() -> None:
    routes = captured()
    assert default_gateway(routes, AF_INET) == ipaddress.IPv4Address("192.168.77.1")
    assert default_gateway(routes, AF_INET6) == ipaddress.IPv6Address("2001:db8:77::1")
    assert default_gateway([], AF_INET) is None


def test_addresses_primaries_first_kernel_link_local_stays() -> None:
    addrs = addresses_from_ip_json(ADDRS, "eth0")
    snap = UplinkSnapshot("eth0", 2, MAC, 1500, True, tuple(addrs), ())
    moved = addresses_to_move(snap)
    assert [a.address for a in moved] == [
        "192.168.77.10",
        "10.5.0.1",
        "192.168.77.11",  # secondary after its primary
        "2001:db8:77::10",  # IPv6 re-added oldest first: the kernel prepends
        "2001:db8:77::20",
    ]
    assert primary_ipv4(moved) == ipaddress.IPv4Address("192.168.77.10")
    lifetimes = {a.address: (a.valid_lft, a.preferred_lft) for a in moved}
    assert lifetimes["2001:db8:77::20"] == (3600, 1800)
    assert lifetimes["2001:db8:77::10"] == (None, None)


def test_kernel_link_local_detection() -> None:
    ll = str(eui64_link_local(MAC))
    assert ll == "fe80::14a7:6dff:feb9:c13"
    assert is_kernel_ll(AddrSnap(AF_INET6, ll, 64, scope=253), MAC)
    assert is_kernel_ll(AddrSnap(AF_INET6, "fe80::99", 64, scope=253, proto=3))
    manual = AddrSnap(AF_INET6, "fe80::99", 64, scope=253)
    assert not is_kernel_ll(manual, MAC)
    snap = UplinkSnapshot("eth0", 2, MAC, 1500, True, (manual,), ())
    assert addresses_to_move(snap) == [manual]  # a hand-made link-local moves too


def test_bridge_label_mapping() -> None:
    assert bridge_label("eth0", "eth0", "cni0") == "cni0"
    assert bridge_label("eth0:1", "eth0", "cni0") == "cni0:1"
    assert bridge_label(None, "eth0", "cni0") is None
    assert bridge_label("eth0:longlabel", "eth0", "bridge-name") == "bridge-name"


LINKS = [(1, "lo"), (5, "enp3s0"), (2, "eth0"), (3, "eth1"), (9, "cni0")]


def test_select_uplink_by_exact_name() -> None:
    assert select_uplink("eth1", LINKS) == "eth1"


def test_select_uplink_regex_first_match_by_ifindex() -> None:
    assert select_uplink("eth[0-9]+", LINKS) == "eth0"
    assert select_uplink("e.*", LINKS) == "eth0"  # ifindex 2 before enp3s0's 5
    assert select_uplink("en.*|eth1", LINKS) == "eth1"


def test_select_uplink_regex_must_match_whole_name() -> None:
    with pytest.raises(CNIError) as err:
        select_uplink("eth", LINKS)
    assert err.value.code == 7 and "'eth'" in err.value.msg


@pytest.mark.parametrize("spec", ["eth9", "wl.*", "cni0", "lo"])
def test_select_uplink_refuses_missing_or_unusable(spec: str) -> None:
    with pytest.raises(CNIError) as err:
        select_uplink(spec, LINKS, exclude=["cni0"])
    assert err.value.code == 7 and spec in err.value.msg


def test_select_uplink_invalid_regex() -> None:
    with pytest.raises(CNIError) as err:
        select_uplink("eth[", LINKS)
    assert err.value.code == 7 and "eth[" in err.value.msg


def test_snapshot_json_round_trip() -> None:
    addrs = tuple(addresses_from_ip_json(ADDRS, "eth0"))
    snap = UplinkSnapshot(
        "eth0", 2, MAC, 1500, True, addrs, tuple(captured()), accept_ra="2", taken_at=5.0
    )
    again = UplinkSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap
