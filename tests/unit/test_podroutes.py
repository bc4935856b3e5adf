"""Pod route planning: node-pointing default, DHCP router, option 121 precedence."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from cni_bridge_dhcp.agent.podroutes import PodRoute, plan_routes
from cni_bridge_dhcp.errors import CNIError

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


def test_node_mode_keeps_classless_non_default_routes_but_not_their_default() -> None:
    classless = (
        (IPv4Network("10.0.0.0/8"), ROUTER),
        (DEFAULT, ROUTER),
        (IPv4Network("192.168.50.0/24"), IPv4Address("0.0.0.0")),
    )
    static = (PodRoute(IPv4Network("172.16.0.0/12"), ROUTER),)
    routes, gw = plan_routes("node", NODE, ROUTER, classless, static)
    assert gw == NODE
    assert PodRoute(IPv4Network("192.168.50.0/24")) in routes  # 0.0.0.0 gateway = on-link
    assert PodRoute(IPv4Network("10.0.0.0/8"), ROUTER) in routes and static[0] in routes
    assert [r for r in routes if r.dst == DEFAULT] == [PodRoute(DEFAULT, NODE)]
    assert routes[-1] == PodRoute(DEFAULT, NODE)
