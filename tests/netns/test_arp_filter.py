"""A pod's DHCP transport hands the agent only the ARP frames its probe looks for.

Every pod's ARP socket used to receive every ARP frame on the LAN and parse it in Python,
probe or not: in a burst of concurrent ADDs, each probing pod's frames woke every other
pod's socket. The kernel now filters (BPF): nothing outside a probe, and during one only
frames whose sender address is the probed one, which is all arp_conflict() looks at.
"""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address

import pytest

from cni_bridge_dhcp.agent.datapath.arp import Arp
from cni_bridge_dhcp.agent.dhcp import transport
from cni_bridge_dhcp.agent.dhcp.transport import PodTransportFactory, Target
from testbed.sandbox import ROUTER_IP, Sandbox, run

OTHER_IP = "192.168.77.50"  # a plain LAN host's address


def _mac(netns: str) -> str:
    return str(
        json.loads(run(["ip", "-n", netns, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    )


def _arping(netns: str, target: str, count: int) -> None:
    run(
        ["busybox", "arping", "-c", str(count), "-w", "2", "-I", "eth0", target],
        netns=netns,
        check=False,
    )


def test_arp_socket_sees_only_the_probed_address(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox
    other = sb.add_pod("other")
    sb.attach_to_lan(other)
    run(["ip", "-n", other.name, "addr", "add", f"{OTHER_IP}/24", "dev", "eth0"])
    prober = sb.add_pod("prober")
    sb.attach_to_lan(prober)

    parsed: list[Arp | None] = []
    real_parse = transport.parse_arp

    def counting_parse(data: bytes) -> Arp | None:
        arp = real_parse(data)
        parsed.append(arp)
        return arp

    monkeypatch.setattr(transport, "parse_arp", counting_parse)

    async def scenario() -> tuple[int, bool, int, bool]:
        target = Target(netns_path=prober.path, ifname="eth0", mac=_mac(prober.name))
        tr = await PodTransportFactory().open(target)
        try:
            # LAN chatter that is none of the pod's business: another host asking for the
            # router, several times (broadcast requests, sender address OTHER_IP)
            await asyncio.to_thread(_arping, other.name, ROUTER_IP, 4)
            await asyncio.sleep(0.2)
            idle = len(parsed)
            # a probe for a free address: the same chatter is still filtered out
            chatter = asyncio.create_task(asyncio.to_thread(_arping, other.name, ROUTER_IP, 3))
            free = await tr.arp_probe(IPv4Address("192.168.77.60"), 1.0, 3)
            await chatter
            during_free = len(parsed) - idle
            # a probe for the address the other host holds: its answer gets through
            taken = await tr.arp_probe(IPv4Address(OTHER_IP), 1.0, 3)
            return idle, free, during_free, taken
        finally:
            tr.close()

    idle, free, during_free, taken = asyncio.run(scenario())
    assert idle == 0, f"{idle} ARP frames parsed with no probe running"
    assert free is False
    assert during_free == 0, f"{during_free} unrelated ARP frames parsed during a probe"
    assert taken is True, "the host holding the address was not seen"
    assert parsed and all(a is not None and str(a.spa) == OTHER_IP for a in parsed)
