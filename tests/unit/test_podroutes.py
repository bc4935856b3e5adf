"""Pod route planning: node-pointing default, DHCP router, option 121 precedence."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from cni_bridge_dhcp.agent.datapath.podroutes import PodRoute, plan_routes
from cni_bridge_dhcp.cni.errors import CNIError

NODE = IPv4Address("192.168.77.10")
ROUTER = IPv4Address("192.168.77.1")
DEFAULT = IPv4Network("0.0.0.0/0")


def test_node_mode_routes_on_link_to_node_then_default_via_node() -> None:
    routes, gw = plan_routes("node", NODE, ROUTER, (), ())
    assert routes == (PodRoute(IPv4Network("192.168.77.10/32")), PodRoute(DEFAULT, NODE))
    assert gw == NODE


def test_node_mode_without_node_address_is_a_config_error() -> None:
    with pytest.raises(CNIError) as exc:
        plan_routes("node", None, ROUTER, (), ())
    assert exc.value.code == 7 and "defaultRoute" in exc.value.msg


def test_dhcp_mode_uses_the_router_option() -> None:
    routes, gw = plan_routes("dhcp", NODE, ROUTER, (), ())
    assert routes == (PodRoute(DEFAULT, ROUTER),) and gw == ROUTER


def test_none_mode_installs_no_default() -> None:
    routes, gw = plan_routes("none", NODE, ROUTER, (), ())
    assert routes == () and gw is None


def test_classless_routes_override_router_in_dhcp_mode() -> None:
    other = IPv4Address("192.168.77.2")
    classless = ((IPv4Network("10.0.0.0/8"), ROUTER), (DEFAULT, other))
    routes, gw = plan_routes("dhcp", NODE, ROUTER, classless, ())
    assert gw == other
    assert routes == (PodRoute(IPv4Network("10.0.0.0/8"), ROUTER), PodRoute(DEFAULT, other))


def test_classless_without_default_means_no_default_in_dhcp_mode() -> None:
    routes, gw = plan_routes("dhcp", NODE, ROUTER, ((IPv4Network("10.0.0.0/8"), ROUTER),), ())
    assert gw is None and all(r.dst != DEFAULT for r in routes)


def test_node_mode_keeps_on_lan_classless_routes_but_not_their_default() -> None:
    # Off-LAN server routes (10.0.0.0/8 via the router) used to be kept here: issue 12 item
    # 5b drops them in "node" mode (see below); on-LAN ones stay.
    classless = (
        (IPv4Network("192.168.77.64/26"), ROUTER),
        (DEFAULT, ROUTER),
        (IPv4Network("192.168.77.7/32"), IPv4Address("0.0.0.0")),
    )
    static = (PodRoute(IPv4Network("172.16.0.0/12"), ROUTER),)
    routes, gw = plan_routes(
        "node", NODE, ROUTER, classless, static, subnet=IPv4Network("192.168.77.0/24")
    )
    assert gw == NODE
    assert PodRoute(IPv4Network("192.168.77.7/32")) in routes  # 0.0.0.0 gateway = on-link
    assert PodRoute(IPv4Network("192.168.77.64/26"), ROUTER) in routes and static[0] in routes
    assert [r for r in routes if r.dst == DEFAULT] == [PodRoute(DEFAULT, NODE)]
    assert routes[-1] == PodRoute(DEFAULT, NODE)


SUBNET = IPv4Network("192.168.77.0/24")
OTHER = IPv4Address("192.168.77.2")


def test_node_mode_drops_server_routes_covering_off_lan_space(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 0/1 + 128/1 is the classic "all traffic" pair that a /0 check misses (issue 12 item 5b)
    classless = (
        (IPv4Network("0.0.0.0/1"), OTHER),
        (IPv4Network("128.0.0.0/1"), OTHER),
        (IPv4Network("10.0.0.0/8"), OTHER),
        (IPv4Network("192.168.50.0/24"), IPv4Address("0.0.0.0")),
        (DEFAULT, OTHER),
    )
    caplog.set_level("WARNING")
    routes, gw = plan_routes("node", NODE, ROUTER, classless, (), subnet=SUBNET)
    assert routes == (PodRoute(IPv4Network("192.168.77.10/32")), PodRoute(DEFAULT, NODE))
    assert gw == NODE
    logged = caplog.text
    for dst in ("0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8", "192.168.50.0/24"):
        assert dst in logged, f"dropping {dst} is not logged"


def test_node_mode_keeps_on_lan_server_routes_and_routes_via_the_node() -> None:
    classless = (
        (IPv4Network("192.168.77.128/25"), OTHER),  # inside the pod's subnet
        (IPv4Network("192.168.77.5/32"), IPv4Address("0.0.0.0")),
        (IPv4Network("172.20.0.0/16"), NODE),  # through the node anyway
    )
    static = (PodRoute(IPv4Network("172.16.0.0/12"), ROUTER),)  # the admin's ipam.routes
    routes, gw = plan_routes("node", NODE, ROUTER, classless, static, subnet=SUBNET)
    assert PodRoute(IPv4Network("192.168.77.128/25"), OTHER) in routes
    assert PodRoute(IPv4Network("192.168.77.5/32")) in routes
    assert PodRoute(IPv4Network("172.20.0.0/16"), NODE) in routes
    assert static[0] in routes
    assert routes[-1] == PodRoute(DEFAULT, NODE) and gw == NODE


def test_dhcp_mode_keeps_every_server_route() -> None:
    classless = ((IPv4Network("0.0.0.0/1"), OTHER), (IPv4Network("128.0.0.0/1"), OTHER))
    routes, _gw = plan_routes("dhcp", NODE, ROUTER, classless, (), subnet=SUBNET)
    assert [r.dst for r in routes] == [IPv4Network("0.0.0.0/1"), IPv4Network("128.0.0.0/1")]
