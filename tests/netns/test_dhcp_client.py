"""The DHCP client against real servers (dnsmasq, ISC dhcpd) from real pod namespaces.

Layout: the sandbox's ``lan`` namespace (bridge lan0 + server); each pod namespace's eth0 is
a veth whose peer is enslaved in lan0. The LeaseManager runs in this test process; all its
sockets are created inside the pod namespaces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from dhcp_leases import DhcpLeases

from cni_bridge_dhcp.agent.datapath.netns import open_netns
from cni_bridge_dhcp.agent.dhcp import BOUND, Lease, LeaseManager, LeaseRequest, client_id_for
from cni_bridge_dhcp.agent.dhcp.journal import Journal
from testbed.sandbox import (
    LAN_DOMAIN,
    POOL_END,
    POOL_START,
    ROUTER_IP,
    Pod,
    Sandbox,
    parse_dnsmasq_leases,
    run,
)

POOL = range(int(IPv4Address(POOL_START)), int(IPv4Address(POOL_END)) + 1)


def in_pool(addr: IPv4Address) -> bool:
    return int(addr) in POOL


def pod_mac(pod: Pod, ifname: str = "eth0") -> str:
    (link,) = json.loads(run(["ip", "-n", pod.name, "-j", "link", "show", ifname]).stdout)
    return str(link["address"])


def link_up(pod: Pod, ifname: str = "eth0") -> bool:
    (link,) = json.loads(run(["ip", "-n", pod.name, "-j", "link", "show", ifname]).stdout)
    return "UP" in link["flags"]


def configure(pod: Pod, lease: Lease) -> None:
    """What the plugin does after acquire(): the leased address on the pod interface."""
    run(["ip", "-n", pod.name, "addr", "replace", str(lease.address), "dev", lease.ifname])


def dhcpd_last(path: Path) -> dict[str, Any]:
    """The last entry per address in dhcpd's lease journal (later entries supersede)."""
    return {lease.ip: lease for lease in DhcpLeases(str(path)).get()}


class Pods:
    """Pod namespaces plugged into the sandbox LAN, with open netns fds for requests."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.fds: list[int] = []

    def add(self, suffix: str, *, down: bool = True) -> Pod:
        pod = self.box.add_pod(suffix)
        self.box.attach_to_lan(pod)
        if down:
            # the client must bring the interface up itself
            run(["ip", "-n", pod.name, "link", "set", "eth0", "down"])
        return pod

    def request(self, pod: Pod, *, name: str = "web-0", timeout: float = 15.0) -> LeaseRequest:
        fd = open_netns(pod.path)
        self.fds.append(fd)
        return LeaseRequest(
            key=f"lan/{pod.name}/eth0",
            netns_path=pod.path,
            netns_fd=fd,
            ifname="eth0",
            mac=pod_mac(pod),
            client_id=client_id_for("default", name, pod.name, "lan", "eth0"),
            hostname=name,
            timeout=timeout,
            meta={"podNamespace": "default", "podName": name},
        )

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def pods(sandbox: Sandbox) -> Iterator[Pods]:
    p = Pods(sandbox)
    try:
        yield p
    finally:
        p.close()


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def no_hook(key: str, old: Lease | None, new: Lease | None) -> None:
    return None


# -- dnsmasq ---------------------------------------------------------------------------------


def test_dnsmasq_lease_release_and_same_address_again(
    sandbox: Sandbox, pods: Pods, tmp_path: Path
) -> None:
    sandbox.start_dnsmasq()
    pod = pods.add("a")
    req = pods.request(pod)

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")
        await m.start()
        try:
            lease = await m.acquire(req)
            assert lease.state == BOUND and in_pool(lease.address.ip)
            assert lease.address.network.prefixlen == 24
            assert lease.router == IPv4Address(ROUTER_IP)
            assert lease.dns_servers == (IPv4Address(ROUTER_IP),)
            assert lease.domain == LAN_DOMAIN
            assert lease.server_id == IPv4Address(ROUTER_IP)
            assert link_up(pod)
            (row,) = parse_dnsmasq_leases(sandbox.dnsmasq_leases_path)
            assert row["ip"] == str(lease.address.ip)
            assert row["mac"] == req.mac  # sent from inside the pod, with its MAC
            assert row["client_id"] == ":".join(f"{b:02x}" for b in req.client_id)
            assert row["hostname"] == "web-0"
            assert [r.key for r in Journal(tmp_path / "state").load()] == [req.key]

            assert await m.release(req.key) is True
            await wait_for(
                lambda: parse_dnsmasq_leases(sandbox.dnsmasq_leases_path) == [],
                5,
                "dnsmasq to drop the released lease",
            )
            assert (
                f"DHCPRELEASE(lan0) {lease.address.ip} {req.mac}"
                in (sandbox.tmp / "dnsmasq.log").read_text()
            )
            assert Journal(tmp_path / "state").load() == []
            assert await m.release(req.key) is False

            again = await m.acquire(req)  # same client id: the server gives the same lease
            assert again.address == lease.address
            await m.release(req.key)
        finally:
            await m.close()

    run_async(go())


def test_release_without_a_known_server_mac_goes_through_the_pod_stack(
    sandbox: Sandbox, pods: Pods, tmp_path: Path
) -> None:
    """A journaled lease without the server's MAC (e.g. a relayed lease whose relay was
    replaced): RELEASE is sent by a UDP socket in the pod, routed by the pod's kernel."""
    sandbox.start_dnsmasq()
    pod = pods.add("u")
    req = pods.request(pod)
    state = tmp_path / "state"

    async def go() -> None:
        m = LeaseManager(state)
        lease = await m.acquire(req)
        configure(pod, lease)
        await m.close()
        Journal(state).write(replace(lease, server_mac=None))
        m2 = LeaseManager(state)
        await m2.start()
        try:
            assert await m2.release(req.key)
            await wait_for(
                lambda: parse_dnsmasq_leases(sandbox.dnsmasq_leases_path) == [],
                5,
                "dnsmasq to drop the released lease",
            )
        finally:
            await m2.close()

    run_async(go())


def test_dnsmasq_with_its_ping_check(sandbox: Sandbox, pods: Pods, tmp_path: Path) -> None:
    """dnsmasq's default ~3 s ping before an OFFER: our retransmissions must not upset it."""
    sandbox.start_dnsmasq(no_ping=False)
    pod = pods.add("p")

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")
        try:
            lease = await m.acquire(pods.request(pod))
            assert in_pool(lease.address.ip)
            (row,) = parse_dnsmasq_leases(sandbox.dnsmasq_leases_path)
            assert row["ip"] == str(lease.address.ip)
        finally:
            await m.close()

    run_async(go())


@pytest.mark.parametrize("probe", ["default", "off"])
def test_an_address_in_use_is_declined_unless_the_probe_is_off(
    sandbox: Sandbox, pods: Pods, tmp_path: Path, probe: str
) -> None:
    """The ARP probe finds a squatter and DECLINEs; ipam.arpProbeWait 0 trades that check
    for speed, and the squatted address is taken."""
    sandbox.start_dnsmasq()  # --no-ping: the server will not notice the squatter
    pod = pods.add("d")
    req = pods.request(pod)
    if probe == "off":
        req = dataclasses.replace(req, arp_probe_wait=0.0)

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")
        try:
            # dnsmasq picks addresses by hashing the client: learn which one it gives us ...
            first = await m.acquire(req)
            await m.release(req.key)
            # ... and let another host on the LAN hold it statically.
            squatter = pods.add("squat", down=False)
            run(["ip", "-n", squatter.name, "addr", "add", f"{first.address}", "dev", "eth0"])
            lease = await m.acquire(req)
            log = (sandbox.tmp / "dnsmasq.log").read_text()
            if probe == "off":
                assert lease.address.ip == first.address.ip
                assert "DHCPDECLINE" not in log
                return
            assert lease.address.ip != first.address.ip and in_pool(lease.address.ip)
            assert f"DHCPDECLINE(lan0) {first.address.ip} {req.mac}" in log
            (row,) = parse_dnsmasq_leases(sandbox.dnsmasq_leases_path)
            assert row["ip"] == str(lease.address.ip)
        finally:
            await m.close()

    run_async(go())


# -- ISC dhcpd: short leases -----------------------------------------------------------------

LEASE_SECONDS = 10  # T1 5 s, T2 8.75 s


def test_dhcpd_renews_at_t1_and_release_frees(sandbox: Sandbox, pods: Pods, tmp_path: Path) -> None:
    sandbox.start_dhcpd(lease_seconds=LEASE_SECONDS)
    pod = pods.add("r")
    req = pods.request(pod)

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")
        try:
            lease = await m.acquire(req)
            assert (lease.t1, lease.t2, lease.lease_time) == (5, 8.75, 10)
            configure(pod, lease)
            ip = str(lease.address.ip)
            first = dhcpd_last(sandbox.dhcpd_leases_path)[ip]
            assert first.binding_state == "active" and first.ethernet == req.mac
            assert first.hostname == "web-0"

            def renewed() -> bool:
                cur = m.get(req.key)
                return cur is not None and cur.bound_at > lease.bound_at

            await wait_for(renewed, 3 * LEASE_SECONDS, "a renewal")
            cur = m.get(req.key)
            assert cur is not None and cur.state == BOUND and cur.address == lease.address
            assert cur.bound_at >= lease.renew_at - 0.5  # not before T1
            assert cur.bound_at < lease.rebind_at  # by unicast RENEWING, before T2
            await wait_for(
                lambda: dhcpd_last(sandbox.dhcpd_leases_path)[ip].end > first.end,
                5,
                "dhcpd to record the extended lease",
            )
            assert (Journal(tmp_path / "state").load())[0].expires_at == cur.expires_at

            assert await m.release(req.key)
            await wait_for(
                lambda: dhcpd_last(sandbox.dhcpd_leases_path)[ip].binding_state == "free",
                5,
                "dhcpd to mark the lease released",
            )
            await wait_for(
                lambda: (
                    f"DHCPRELEASE of {ip} from {req.mac}" in (sandbox.tmp / "dhcpd.log").read_text()
                ),
                5,
                "dhcpd to log the release",
            )
        finally:
            await m.close()

    run_async(go())


def test_agent_restart_readopts_and_renews_the_same_address(
    sandbox: Sandbox, pods: Pods, tmp_path: Path
) -> None:
    sandbox.start_dhcpd(lease_seconds=LEASE_SECONDS)
    pod = pods.add("s")
    req = pods.request(pod)
    state = tmp_path / "state"

    async def go() -> None:
        m = LeaseManager(state)
        lease = await m.acquire(req)
        configure(pod, lease)
        await m.close()  # the agent goes away without releasing anything
        ip = str(lease.address.ip)
        assert dhcpd_last(sandbox.dhcpd_leases_path)[ip].binding_state == "active"

        m2 = LeaseManager(state)
        await m2.start()
        try:
            adopted = m2.get(req.key)
            assert adopted is not None and adopted.address == lease.address

            def renewed() -> bool:
                cur = m2.get(req.key)
                return cur is not None and cur.bound_at > lease.bound_at

            await wait_for(renewed, 3 * LEASE_SECONDS, "the re-adopted lease to renew")
            cur = m2.get(req.key)
            assert cur is not None and cur.address == lease.address and cur.state == BOUND
            assert cur.bound_at < lease.rebind_at  # renewed on time, not rebound
            active = [
                x
                for x in dhcpd_last(sandbox.dhcpd_leases_path).values()
                if x.binding_state == "active"
            ]
            assert [x.ip for x in active] == [ip]  # nothing leaked at the server
        finally:
            await m2.release(req.key)
            await m2.close()

    run_async(go())


def test_init_reboot_nak_falls_back_to_init(sandbox: Sandbox, pods: Pods, tmp_path: Path) -> None:
    """A journaled lease for an address outside the server's subnet (the LAN was
    renumbered while the agent was down): INIT-REBOOT is NAKed, the client goes to INIT."""
    sandbox.start_dhcpd(lease_seconds=60)
    pod = pods.add("n")
    req = pods.request(pod)
    state = tmp_path / "state"
    changes: list[tuple[Lease | None, Lease | None]] = []

    async def hook(key: str, old: Lease | None, new: Lease | None) -> None:
        changes.append((old, new))

    async def go() -> None:
        m = LeaseManager(state, on_change=hook)
        lease = await m.acquire(req)
        await m.close()
        stale = replace(
            lease,
            address=IPv4Interface("10.99.0.5/24"),
            rebind_at=time.time() - 10,
            expires_at=time.time() - 1,
        )
        Journal(state).write(stale)

        m2 = LeaseManager(state, on_change=hook)
        await m2.start()
        try:
            await wait_for(lambda: len(changes) == 2, 15, "loss and re-acquisition")
            lost, regained = changes
            assert lost[0] is not None and lost[0].address == stale.address and lost[1] is None
            new = regained[1]
            assert regained[0] is None and new is not None
            assert new.state == BOUND and in_pool(new.address.ip)
            log = (sandbox.tmp / "dhcpd.log").read_text()
            assert "DHCPNAK on 10.99.0.5" in log
            cur = m2.get(req.key)
            assert cur is not None and cur.address == new.address
        finally:
            await m2.release(req.key)
            await m2.close()

    run_async(go())


def pod_addresses(pod: Pod, ifname: str = "eth0") -> list[str]:
    ifaces = json.loads(run(["ip", "-n", pod.name, "-j", "-4", "addr", "show", ifname]).stdout)
    # an interface without IPv4 addresses is left out of the listing altogether
    return [f"{a['local']}/{a['prefixlen']}" for i in ifaces for a in i.get("addr_info", [])]


@pytest.mark.slow  # two lease lifetimes of a 10 s lease
def test_rebinding_keeps_the_address_and_expiry_removes_then_reacquires(
    sandbox: Sandbox, pods: Pods, tmp_path: Path
) -> None:
    dhcpd = sandbox.start_dhcpd(lease_seconds=LEASE_SECONDS)
    pod = pods.add("x")
    req = pods.request(pod)

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")  # the default hook manages the pod address
        try:
            lease = await m.acquire(req)
            configure(pod, lease)
            # server gone past T2: RENEWING fails, REBINDING starts
            dhcpd.stop()
            await wait_for(
                lambda: m.get(req.key).state == "REBINDING",  # type: ignore[union-attr]
                2 * LEASE_SECONDS,
                "REBINDING",
            )
            assert time.time() >= lease.rebind_at
            # back before expiry: the broadcast REQUEST is answered, same address
            sandbox.start_dhcpd(lease_seconds=LEASE_SECONDS)
            await wait_for(
                lambda: m.get(req.key).state == BOUND,  # type: ignore[union-attr]
                LEASE_SECONDS,
                "rebinding to succeed",
            )
            rebound = m.get(req.key)
            assert rebound is not None and rebound.address == lease.address
            assert rebound.bound_at > lease.rebind_at - 0.5
            assert pod_addresses(pod) == [str(lease.address)]

            # gone past expiry: the address comes off the pod
            for d in sandbox.daemons:
                if d.name == "dhcpd":
                    d.stop()
            await wait_for(
                lambda: m.get(req.key).state == "EXPIRED",  # type: ignore[union-attr]
                2 * LEASE_SECONDS,
                "expiry",
            )
            await wait_for(lambda: pod_addresses(pod) == [], 5, "the address to be removed")
            # the server returns: re-acquired (dhcpd gives the same client the same address)
            sandbox.start_dhcpd(lease_seconds=LEASE_SECONDS)
            await wait_for(
                lambda: m.get(req.key).state == BOUND,  # type: ignore[union-attr]
                3 * LEASE_SECONDS,
                "re-acquisition",
            )
            back = m.get(req.key)
            assert back is not None and in_pool(back.address.ip)
            await wait_for(
                lambda: pod_addresses(pod) == [str(back.address)], 5, "the address to return"
            )
        finally:
            await m.release(req.key)
            await m.close()

    run_async(go())


def test_many_pods_at_once(sandbox: Sandbox, pods: Pods, tmp_path: Path) -> None:
    sandbox.start_dnsmasq()
    all_pods = [pods.add(f"m{i}") for i in range(40)]
    reqs = [pods.request(p, name=f"web-{i}") for i, p in enumerate(all_pods)]

    async def go() -> None:
        m = LeaseManager(tmp_path / "state")
        try:
            leases = await asyncio.gather(*(m.acquire(r) for r in reqs))
            addrs = {lease.address.ip for lease in leases}
            assert len(addrs) == len(reqs) and all(in_pool(a) for a in addrs)
            rows = parse_dnsmasq_leases(sandbox.dnsmasq_leases_path)
            assert {(r["mac"], r["ip"]) for r in rows} == {
                (req.mac, str(lease.address.ip)) for req, lease in zip(reqs, leases, strict=True)
            }
            assert len(Journal(tmp_path / "state").load()) == len(reqs)
            assert all(await asyncio.gather(*(m.release(r.key) for r in reqs)))
            await wait_for(
                lambda: parse_dnsmasq_leases(sandbox.dnsmasq_leases_path) == [],
                5,
                "all leases released",
            )
        finally:
            await m.close()

    run_async(go())
