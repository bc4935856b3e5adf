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


def _packet_sockets(netns: str) -> int:
    lines = run(["cat", "/proc/net/packet"], netns=netns).stdout.splitlines()
    return len(lines) - 1  # the header


def test_only_a_transport_that_may_probe_holds_an_arp_socket(sandbox: Sandbox) -> None:
    """A renewal or release (opened with ``unicast_from``) never probes: it gets the DHCP
    packet socket only; each lease renews every few minutes, on nodes with hundreds."""
    sb = sandbox
    pod = sb.add_pod("renewer")
    sb.attach_to_lan(pod)

    async def scenario() -> tuple[int, int]:
        target = Target(netns_path=pod.path, ifname="eth0", mac=_mac(pod.name))
        renewing = await PodTransportFactory().open(
            target, unicast_from=IPv4Address("192.168.77.61")
        )
        try:
            for_renewal = await asyncio.to_thread(_packet_sockets, pod.name)
            with pytest.raises(RuntimeError, match="cannot probe"):
                await renewing.arp_probe(IPv4Address("192.168.77.60"), 0.5, 1)
        finally:
            renewing.close()  # its sockets close in a worker thread: wait for them
        for _ in range(100):
            if await asyncio.to_thread(_packet_sockets, pod.name) == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the renewal transport's packet socket was never closed")
        probing = await PodTransportFactory().open(target)
        try:
            for_probing = await asyncio.to_thread(_packet_sockets, pod.name)
            assert await probing.arp_probe(IPv4Address("192.168.77.60"), 0.3, 1) is False
        finally:
            probing.close()
        return for_renewal, for_probing

    for_renewal, for_probing = asyncio.run(scenario())
    assert for_renewal == 1
    assert for_probing == 2
