"""A pod's lease that comes back at another address: the DHCPv4 and DHCPv6 hooks bring the
attachment record and the pod's firewall rules along (one shared ``retarget``), each
replacing only its own family's address. Real attachment store, address book and firewall
registry in a temp dir; the firewall backend is test_commands' fake."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from cni_bridge_dhcp.agent.commands import lease6_follow, lease_follow
from cni_bridge_dhcp.agent.state.attachments import AttachmentState
from tests.unit.test_commands import KEY, FakeLinks, FakeServices, _add, links, services
from tests.unit.test_dhcp_lease import sample_lease
from tests.unit.test_dhcpv6 import _lease as sample_lease6

__all__ = ["links", "services"]  # the fixtures

V6_OLD = IPv6Interface("fd77:77::1000/64")
V6_NEW = IPv6Interface("fd77:77::1001/64")


def _ready_dual_stack(services: FakeServices) -> None:
    _add(services)
    att = services.store.get(KEY)
    assert att is not None and att.ips == ["192.168.77.148/24"]
    att.ips = [*att.ips, str(V6_OLD)]
    services.store.put(att)


def _state(services: FakeServices) -> tuple[list[str], list[str]]:
    att = services.store.get(KEY)
    assert att is not None
    rules = services.fw.pods[("lan", "c1", "eth0")]
    return att.ips, [str(ip) for ip in rules.ips]


def test_a_moved_dhcpv6_lease_moves_only_the_v6_address(
    services: FakeServices, links: FakeLinks, caplog: pytest.LogCaptureFixture
) -> None:
    _ready_dual_stack(services)
    old = dataclasses.replace(sample_lease6(), key=KEY, address=V6_OLD)
    new = dataclasses.replace(old, address=V6_NEW)
    with caplog.at_level(logging.WARNING):
        asyncio.run(lease6_follow._follow(services, KEY, old, new))  # type: ignore[arg-type]
    want = ["192.168.77.148/24", str(V6_NEW)]
    assert _state(services) == (want, want)
    assert f"DHCPv6 address moved from {V6_OLD} to {V6_NEW}" in caplog.text


def test_a_moved_dhcpv4_lease_moves_only_the_v4_address_and_is_remembered(
    services: FakeServices, links: FakeLinks, caplog: pytest.LogCaptureFixture
) -> None:
    _ready_dual_stack(services)
    lease = sample_lease(key=KEY, address=IPv4Interface("192.168.77.160/24"))
    with caplog.at_level(logging.WARNING):
        asyncio.run(lease_follow._follow(services, KEY, lease))  # type: ignore[arg-type]
    want = ["192.168.77.160/24", str(V6_OLD)]
    assert _state(services) == (want, want)
    assert "moved pod default/web-0 from 192.168.77.148/24, fd77:77::1000/64" in caplog.text
    assert services.addressbook.get(lease.client_id) == lease.address.ip
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        asyncio.run(lease_follow._follow(services, KEY, lease))  # type: ignore[arg-type]
    assert caplog.text == ""  # already followed: nothing to do


def test_an_attachment_not_ready_is_left_to_its_add(
    services: FakeServices, links: FakeLinks
) -> None:
    _ready_dual_stack(services)
    att = services.store.get(KEY)
    assert att is not None
    att.state = AttachmentState.PENDING
    services.store.put(att)
    lease = sample_lease(key=KEY, address=IPv4Interface("192.168.77.160/24"))
    asyncio.run(lease_follow._follow(services, KEY, lease))  # type: ignore[arg-type]
    old = dataclasses.replace(sample_lease6(), key=KEY, address=V6_OLD)
    asyncio.run(
        lease6_follow._follow(services, KEY, old, dataclasses.replace(old, address=V6_NEW))  # type: ignore[arg-type]
    )
    after = services.store.get(KEY)
    assert after is not None and after.ips == ["192.168.77.148/24", str(V6_OLD)]
