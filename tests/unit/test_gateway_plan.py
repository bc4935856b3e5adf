"""isGateway / isDefaultGateway planning with a delegated IPAM (reference calcGateways)."""

from __future__ import annotations

import ipaddress

from cni_bridge_dhcp.agent.datapath.gateway import _conflicts, plan_gateways
from cni_bridge_dhcp.agent.datapath.podroutes import PodRoute

A4 = ipaddress.ip_interface("10.22.0.5/24")
A6 = ipaddress.ip_interface("fd00:22::5/64")
DEF4 = ipaddress.ip_network("0.0.0.0/0")
DEF6 = ipaddress.ip_network("::/0")


def test_no_keys_changes_nothing() -> None:
    plan = plan_gateways((A4,), (None,), (), is_gateway=False, is_default_gateway=False)
    assert plan.gateways == (None,) and not plan.extra_routes and not plan.bridge_addresses


def test_is_gateway_computes_missing_gateway_and_puts_it_on_the_bridge() -> None:
    plan = plan_gateways((A4, A6), (None, None), (), is_gateway=True, is_default_gateway=False)
    assert [str(g) for g in plan.gateways] == ["10.22.0.1", "fd00:22::1"]
    assert [str(a) for a in plan.bridge_addresses] == ["10.22.0.1/24", "fd00:22::1/64"]
    assert not plan.extra_routes


def test_is_gateway_keeps_the_ipam_gateway() -> None:
    gw = ipaddress.ip_address("10.22.0.254")
    plan = plan_gateways((A4,), (gw,), (), is_gateway=True, is_default_gateway=False)
    assert plan.gateways == (gw,) and [str(a) for a in plan.bridge_addresses] == ["10.22.0.254/24"]


def test_is_default_gateway_implies_gateway_and_adds_one_default_per_family() -> None:
    a4b = ipaddress.ip_interface("10.23.0.5/24")
    plan = plan_gateways(
        (A4, a4b, A6), (None, None, None), (), is_gateway=False, is_default_gateway=True
    )
    assert plan.extra_routes == (
        PodRoute(DEF4, ipaddress.ip_address("10.22.0.1")),
        PodRoute(DEF6, ipaddress.ip_address("fd00:22::1")),
    )
    assert len(plan.bridge_addresses) == 3


def test_ipam_default_route_with_gateway_wins_silently() -> None:
    ipam = (PodRoute(DEF4, ipaddress.ip_address("10.22.0.9")),)
    plan = plan_gateways((A4,), (None,), ipam, is_gateway=False, is_default_gateway=True)
    assert not plan.extra_routes
    # a default without a gateway does not count (reference: route.GW != nil)
    plan = plan_gateways(
        (A4,), (None,), (PodRoute(DEF4),), is_gateway=False, is_default_gateway=True
    )
    assert plan.extra_routes == (PodRoute(DEF4, ipaddress.ip_address("10.22.0.1")),)


def test_conflicts_like_ensure_addr() -> None:
    want4 = ipaddress.ip_interface("10.22.0.1/24")
    assert _conflicts(ipaddress.ip_interface("192.168.1.1/24"), want4)  # any other v4
    want6 = ipaddress.ip_interface("fd00:22::1/64")
    assert _conflicts(ipaddress.ip_interface("fd00:22::7/64"), want6)  # overlapping v6
    assert not _conflicts(ipaddress.ip_interface("fd00:99::1/64"), want6)  # disjoint v6
    assert not _conflicts(ipaddress.ip_interface("fe80::1/64"), want6)  # link-local
    assert not _conflicts(ipaddress.ip_interface("fd00:22::7/64"), want4)  # other family
