"""The DHCP client state machine and LeaseManager on a fake clock, a fake transport and a
scripted server: acquisition, retransmission, NAK, DECLINE, renew/rebind/expiry, release,
restart re-adoption."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent.dhcp import (
    BOUND,
    EXPIRED,
    Lease,
    LeaseManager,
    LeaseRequest,
    Timing,
    client_id_for,
    codec,
)
from cni_bridge_dhcp.agent.dhcp.codec import BOOTREPLY, Message, MessageType, Opt
from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.agent.dhcp.transport import Gone, Received, Target
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode

POD_MAC = "0a:58:c0:a8:4d:02"
SERVER_IP = IPv4Address("192.168.77.1")
SERVER_MAC = "02:00:00:00:00:01"


_HOLDS: list[Callable[[], bool]] = []


class FakeClock:
    """Time moves only when someone sleeps; sleeping returns at once, except while a test's
    ``until`` condition holds: then time stands still until the test has looked, so the state
    it waited for cannot race on to the next timer while a journal thread finishes."""

    def __init__(self) -> None:
        self.t = 0.0
        self.epoch = 1_700_000_000.0

    def time(self) -> float:
        return self.epoch + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        while any(hold() for hold in _HOLDS):
            await asyncio.sleep(0)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass
class Seen:
    t: float
    msg: Message
    broadcast: bool
    src: IPv4Address
    dst_mac: str | None = None


@dataclass
class FakeServer:
    clock: FakeClock
    ip: IPv4Address = SERVER_IP
    lease_time: int = 120
    up: bool = True
    nak_requests: int = 0  # NAK this many SELECTING/INIT-REBOOT REQUESTs
    nak_renewals: bool = False
    junk_first: list[bytes] = field(default_factory=list)  # sent ahead of each reply
    seen: list[Seen] = field(default_factory=list)
    bindings: dict[bytes, IPv4Address] = field(default_factory=dict)
    declined: set[IPv4Address] = field(default_factory=set)
    released: list[IPv4Address] = field(default_factory=list)

    def _free(self, cid: bytes, want: IPv4Address | None) -> IPv4Address:
        if cid in self.bindings:
            return self.bindings[cid]
        taken = set(self.bindings.values()) | self.declined
        if want is not None and want not in taken and 100 <= want.packed[3] < 200:
            return want
        return next(
            a for a in (IPv4Address(f"192.168.77.{n}") for n in range(100, 200)) if a not in taken
        )

    def _reply(self, req: Message, mtype: MessageType, yiaddr: IPv4Address = codec.ZERO) -> bytes:
        opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((mtype,)), Opt.SERVER_ID: self.ip.packed}
        if mtype != MessageType.NAK:
            opts.update(
                {
                    Opt.LEASE_TIME: self.lease_time.to_bytes(4, "big"),
                    Opt.SUBNET_MASK: b"\xff\xff\xff\x00",
                    Opt.ROUTER: self.ip.packed,
                    Opt.DNS: self.ip.packed,
                    Opt.DOMAIN: b"lan.test",
                }
            )
        else:
            opts[Opt.MESSAGE] = b"wrong address"
        return codec.encode(
            Message(op=BOOTREPLY, xid=req.xid, chaddr=req.chaddr, yiaddr=yiaddr, options=opts)
        )

    def handle(
        self, payload: bytes, *, broadcast: bool, src: IPv4Address, dst_mac: str | None = None
    ) -> list[bytes]:
        msg = codec.decode(payload)
        self.seen.append(Seen(self.clock.t, msg, broadcast, src, dst_mac))
        if not self.up:
            return []
        # RFC 2131 4.2: without option 61 a server keys the client by chaddr
        cid = msg.options.get(Opt.CLIENT_ID, b"chaddr:" + msg.chaddr)
        mtype = msg.message_type
        requested = msg.options.get(Opt.REQUESTED_IP)
        want = IPv4Address(requested) if requested else None
        out: list[bytes] = []
        if mtype == MessageType.DISCOVER:
            out = [self._reply(msg, MessageType.OFFER, self._free(cid, want))]
        elif mtype == MessageType.REQUEST:
            if msg.ciaddr != codec.ZERO:  # RENEWING / REBINDING
                ok = self.bindings.get(cid) == msg.ciaddr and not self.nak_renewals
                out = [
                    self._reply(msg, MessageType.ACK, msg.ciaddr)
                    if ok
                    else self._reply(msg, MessageType.NAK)
                ]
            else:
                server = msg.options.get(Opt.SERVER_ID)
                if server is not None and IPv4Address(server) != self.ip:
                    return []
                assert want is not None
                if self.nak_requests > 0:
                    self.nak_requests -= 1
                    return [self._reply(msg, MessageType.NAK)]
                if want in self.declined or self._free(cid, want) != want:
                    return [self._reply(msg, MessageType.NAK)]
                self.bindings[cid] = want
                out = [self._reply(msg, MessageType.ACK, want)]
        elif mtype == MessageType.DECLINE:
            self.declined.add(IPv4Address(msg.options[Opt.REQUESTED_IP]))
            self.bindings.pop(cid, None)
        elif mtype == MessageType.RELEASE and self.bindings.get(cid) == msg.ciaddr:
            del self.bindings[cid]
            self.released.append(msg.ciaddr)
        return [*self.junk_first, *out] if out else out

    def of_type(self, mtype: MessageType) -> list[Seen]:
        return [s for s in self.seen if s.msg.message_type == mtype]


class FakeTransport:
    mtu = 1500

    def __init__(self, factory: FakeFactory) -> None:
        self.f = factory
        self.queue: list[Received] = []
        self.closed = False

    def _deliver(self, replies: list[bytes]) -> None:
        self.queue.extend(Received(r, self.f.server.ip, SERVER_MAC) for r in replies)

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = codec.ZERO) -> None:
        self._deliver(self.f.server.handle(payload, broadcast=True, src=src))

    async def send_unicast(
        self, payload: bytes, *, src: IPv4Address, dst: IPv4Address, dst_mac: str | None
    ) -> None:
        if dst == self.f.server.ip and self.f.unicast_reaches:
            self._deliver(self.f.server.handle(payload, broadcast=False, src=src, dst_mac=dst_mac))

    async def recv(self, timeout: float) -> Received | None:
        if self.queue:
            return self.queue.pop(0)
        await self.f.clock.sleep(timeout)
        return None

    async def arp_probe(self, address: IPv4Address, wait: float, probes: int) -> bool:
        self.f.probes.append(address)
        self.f.probe_waits.append(wait)
        await self.f.clock.sleep(wait)
        return address in self.f.in_use

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeFactory:
    clock: FakeClock
    server: FakeServer
    gone: bool = False
    unicast_reaches: bool = True
    in_use: set[IPv4Address] = field(default_factory=set)
    probes: list[IPv4Address] = field(default_factory=list)
    probe_waits: list[float] = field(default_factory=list)
    opened: list[FakeTransport] = field(default_factory=list)
    brought_up: int = 0
    node_opened: list[str] = field(default_factory=list)  # keys of leases released from the node

    async def open(
        self, target: Target, *, bring_up: bool = False, unicast_from: IPv4Address | None = None
    ) -> FakeTransport:
        if self.gone:
            raise Gone(f"netns {target.netns_path} is gone")
        self.brought_up += bring_up
        tr = FakeTransport(self)
        self.opened.append(tr)
        return tr

    async def exists(self, target: Target) -> bool:
        return not self.gone

    async def open_node(self, lease: Lease) -> FakeTransport:
        """The node-side transport (node_release) of a pod that is gone: still reaches the
        server, never runs in the test's own namespace."""
        self.node_opened.append(lease.key)
        return FakeTransport(self)


@dataclass
class Rig:
    clock: FakeClock
    server: FakeServer
    factory: FakeFactory
    state_dir: Path
    changes: list[tuple[Lease | None, Lease | None]]
    fd: int

    def manager(self, **kw: Any) -> LeaseManager:
        async def hook(key: str, old: Lease | None, new: Lease | None) -> None:
            self.changes.append((old, new))

        kw.setdefault("node_transports", self.factory.open_node)
        return LeaseManager(
            self.state_dir, clock=self.clock, transports=self.factory, on_change=hook, **kw
        )

    def request(self, **kw: Any) -> LeaseRequest:
        fields: dict[str, Any] = dict(
            key="lan/c1/eth0",
            netns_path="/run/netns/pod1",
            netns_fd=self.fd,
            ifname="eth0",
            mac=POD_MAC,
            client_id=client_id_for("default", "web-0", "c1", "lan", "eth0"),
            hostname="web-0",
            timeout=10.0,
        )
        fields.update(kw)
        return LeaseRequest(**fields)


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    clock = FakeClock()
    server = FakeServer(clock)
    anchor = tmp_path / "netns-anchor"
    anchor.write_bytes(b"")
    fd = os.open(anchor, os.O_RDONLY)
    try:
        yield Rig(clock, server, FakeFactory(clock, server), tmp_path / "state", [], fd)
    finally:
        os.close(fd)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def lease_of(m: LeaseManager, key: str = "lan/c1/eth0") -> Lease:
    lease = m.get(key)
    assert lease is not None
    return lease


async def until(cond: Callable[[], bool], steps: int = 20000, patience: float = 20.0) -> None:
    # Journal writes run in threads: on a loaded machine they take real time while the loop
    # spins, so the step budget alone fails spuriously. Give up only when both ran out.
    deadline = time.monotonic() + patience
    n = 0
    _HOLDS.append(cond)
    try:
        while n < steps or time.monotonic() < deadline:
            if cond():
                return
            n += 1
            await asyncio.sleep(0 if n < steps else 0.001)
    finally:
        _HOLDS.remove(cond)
    raise AssertionError("condition not reached")


# -- acquisition -----------------------------------------------------------------------------


def test_acquire_binds_and_journals(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request(meta={"podName": "web-0"}))
        assert lease.state == BOUND
        assert str(lease.address) == "192.168.77.100/24"
        assert lease.server_id == SERVER_IP and lease.router == SERVER_IP
        assert lease.dns_servers == (SERVER_IP,) and lease.domain == "lan.test"
        assert (lease.t1, lease.t2, lease.lease_time) == (60, 105, 120)
        assert lease.renew_at == lease.bound_at + 60 and lease.expires_at == lease.bound_at + 120
        assert lease.server_mac == SERVER_MAC and lease.meta == {"podName": "web-0"}
        assert m.get(lease.key) == lease and m.leases() == [lease]
        assert rig.factory.brought_up == 1
        (journaled,) = Journal(rig.state_dir).load()
        assert journaled == lease
        # what the server saw: our MAC, client id, hostname and request list
        discover = rig.server.of_type(MessageType.DISCOVER)[0].msg
        assert discover.chaddr == codec.mac_bytes(POD_MAC)
        assert discover.options[Opt.CLIENT_ID] == rig.request().client_id
        assert discover.options[Opt.HOSTNAME] == b"web-0"
        assert set(discover.options[Opt.PARAM_REQUEST]) >= {
            1,
            3,
            6,
            15,
            26,
            28,
            51,
            54,
            58,
            59,
            119,
            121,
        }
        request = rig.server.of_type(MessageType.REQUEST)[0].msg
        assert request.xid == discover.xid
        assert request.options[Opt.SERVER_ID] == SERVER_IP.packed
        assert request.options[Opt.REQUESTED_IP] == lease.address.ip.packed
        assert rig.factory.probes == [lease.address.ip]
        assert all(tr.closed for tr in rig.factory.opened)
        await m.close()

    run(go())


def test_extra_request_and_provide_are_sent(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        await m.acquire(rig.request(extra_request=(42, 1), provide=((60, b"cbd"), (53, b"\x07"))))
        discover = rig.server.of_type(MessageType.DISCOVER)[0].msg
        assert discover.options[Opt.PARAM_REQUEST].count(1) == 1
        assert 42 in discover.options[Opt.PARAM_REQUEST]
        assert discover.options[60] == b"cbd"
        assert discover.message_type == MessageType.DISCOVER  # provide cannot override 53
        await m.close()

    run(go())


def test_broadcast_flag_only_when_asked_and_only_before_bound(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        await m.acquire(rig.request())
        assert all(s.msg.flags == 0 for s in rig.server.seen)
        await m.release("lan/c1/eth0")
        rig.server.seen.clear()
        lease = await m.acquire(rig.request(broadcast_flag=True))
        assert lease.broadcast_flag
        for s in rig.server.seen:
            assert s.msg.flags == (
                codec.FLAG_BROADCAST if s.msg.message_type != MessageType.DECLINE else 0
            )
        await until(lambda: lease_of(m).bound_at > lease.bound_at)
        renew = rig.server.seen[-1].msg
        assert renew.ciaddr == lease.address.ip and renew.flags == 0
        await m.close()

    run(go())


def test_foreign_and_malformed_replies_are_ignored(rig: Rig) -> None:
    other = Message(
        op=BOOTREPLY,
        xid=1,
        chaddr=codec.mac_bytes(POD_MAC),
        yiaddr=IPv4Address("192.168.77.66"),
        options={Opt.MESSAGE_TYPE: b"\x02", Opt.SERVER_ID: SERVER_IP.packed},
    )
    rig.server.junk_first = [
        b"",
        b"\xff" * 400,
        codec.encode(other),  # wrong xid
        codec.encode(Message(op=1, xid=0, chaddr=b"\x02" * 6)),
    ]

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        assert str(lease.address.ip) == "192.168.77.100"
        await m.close()

    run(go())


def test_retransmission_backoff_and_timeout(rig: Rig) -> None:
    rig.server.up = False

    async def go() -> None:
        m = rig.manager()
        with pytest.raises(CNIError) as err:
            await m.acquire(rig.request(timeout=20.0))
        assert err.value.code == ErrorCode.DHCP_TIMEOUT
        assert "eth0" in err.value.msg and "/run/netns/pod1" in err.value.msg
        times = [s.t for s in rig.server.of_type(MessageType.DISCOVER)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 0.2 <= gaps[0] <= 0.4  # first retry well under a second
        assert gaps[1] > gaps[0] * 1.2 and gaps[2] > gaps[1] * 1.2  # exponential
        assert max(gaps) <= 4.0 * 1.25  # capped
        assert times[-1] < 20.0 and len(times) >= 8
        assert m.get("lan/c1/eth0") is None and Journal(rig.state_dir).load() == []
        await m.close()

    run(go())


def test_nak_restarts_init(rig: Rig) -> None:
    rig.server.nak_requests = 1

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        assert lease.state == BOUND
        assert len(rig.server.of_type(MessageType.DISCOVER)) == 2
        await m.close()

    run(go())


def test_repeated_nak_fails_with_101(rig: Rig) -> None:
    rig.server.nak_requests = 100

    async def go() -> None:
        m = rig.manager()
        with pytest.raises(CNIError) as err:
            await m.acquire(rig.request())
        assert err.value.code == ErrorCode.DHCP_NAK
        assert "eth0" in err.value.msg
        assert len(rig.server.of_type(MessageType.DISCOVER)) == Timing().max_naks
        await m.close()

    run(go())


def test_address_in_use_is_declined_and_another_taken(rig: Rig) -> None:
    first = IPv4Address("192.168.77.100")
    rig.factory.in_use = {first}

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        assert lease.address.ip != first
        (decline,) = rig.server.of_type(MessageType.DECLINE)
        assert decline.msg.options[Opt.REQUESTED_IP] == first.packed
        assert decline.msg.options[Opt.SERVER_ID] == SERVER_IP.packed
        assert decline.msg.ciaddr == codec.ZERO
        assert rig.factory.probes == [first, lease.address.ip]
        await m.close()

    run(go())


def test_acquire_is_idempotent_per_key(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        a = await m.acquire(rig.request())
        b = await m.acquire(rig.request())
        assert a == b and len(rig.server.of_type(MessageType.DISCOVER)) == 1
        await m.close()

    run(go())


def test_missing_interface_is_a_cni_error(rig: Rig) -> None:
    rig.factory.gone = True

    async def go() -> None:
        m = rig.manager()
        with pytest.raises(CNIError) as err:
            await m.acquire(rig.request())
        assert "eth0" in err.value.msg
        await m.close()

    run(go())


# -- bound: renew, rebind, expiry ------------------------------------------------------------


def test_renews_unicast_at_t1_and_extends(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        base = rig.clock.t
        await until(lambda: lease_of(m).bound_at > lease.bound_at)
        renewed = m.get(lease.key)
        assert renewed is not None and renewed.state == BOUND
        assert renewed.address == lease.address
        (renew,) = [
            s for s in rig.server.of_type(MessageType.REQUEST) if s.msg.ciaddr != codec.ZERO
        ]
        assert not renew.broadcast and renew.src == lease.address.ip
        assert renew.dst_mac == SERVER_MAC
        assert Opt.SERVER_ID not in renew.msg.options and Opt.REQUESTED_IP not in renew.msg.options
        assert renew.t - base == pytest.approx(60, abs=0.5)  # at T1
        assert renewed.expires_at == pytest.approx(rig.clock.epoch + renew.t + 120)
        (journaled,) = Journal(rig.state_dir).load()
        assert journaled.expires_at == renewed.expires_at
        assert rig.changes == []  # same address: nothing for the plugin to do
        await m.close()

    run(go())


def test_renew_rebind_expire_then_reacquire(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        t0 = lease.bound_at - rig.clock.epoch
        rig.server.up = False
        await until(lambda: lease_of(m).state == EXPIRED)
        requests = [
            s for s in rig.server.of_type(MessageType.REQUEST) if s.msg.ciaddr != codec.ZERO
        ]
        renewing = [s for s in requests if not s.broadcast]
        rebinding = [s for s in requests if s.broadcast]
        assert renewing and rebinding
        assert all(t0 + 60 <= s.t < t0 + 105 for s in renewing)
        assert all(t0 + 105 <= s.t < t0 + 120 for s in rebinding)
        assert all(s.src == lease.address.ip for s in rebinding)
        assert len({s.msg.xid for s in renewing}) == 1 and len({s.msg.xid for s in rebinding}) == 1
        # told to take the address off
        assert rig.changes == [(lease.with_state("REBINDING"), None)]
        assert Journal(rig.state_dir).load()[0].state == EXPIRED
        # the server comes back: re-acquired, asking for the same address
        rig.server.up = True
        await until(lambda: lease_of(m).state == BOUND)
        again = m.get(lease.key)
        assert again is not None and again.address == lease.address
        assert rig.changes[-1] == (None, again)
        last_discover = rig.server.of_type(MessageType.DISCOVER)[-1].msg
        assert last_discover.options[Opt.REQUESTED_IP] == lease.address.ip.packed
        await m.close()

    run(go())


def test_rebinding_reaches_another_server_when_unicast_fails(rig: Rig) -> None:
    rig.factory.unicast_reaches = False

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await until(lambda: lease_of(m).bound_at > lease.bound_at)
        renewed = m.get(lease.key)
        assert renewed is not None and renewed.state == BOUND
        assert renewed.bound_at - rig.clock.epoch >= lease.bound_at - rig.clock.epoch + 105
        await m.close()

    run(go())


def test_nak_on_renew_loses_the_lease(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        rig.server.nak_renewals = True
        rig.server.bindings.clear()
        rig.server.up = True
        await until(lambda: bool(rig.changes))
        assert rig.changes[0] == (lease.with_state("RENEWING"), None)
        await until(lambda: len(rig.changes) == 2)
        new = rig.changes[1][1]
        assert new is not None and new.state == BOUND
        await m.close()

    run(go())


def test_vanished_pod_during_upkeep_is_dropped(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        rig.factory.gone = True
        await until(lambda: rig.server.released == [lease.address.ip])
        assert m.get(lease.key) is None
        assert rig.factory.node_opened == [lease.key]  # RELEASE sent from the node
        for _ in range(500):  # the record goes in a worker thread
            if not Journal(rig.state_dir).load():
                break
            await asyncio.sleep(0.01)
        assert Journal(rig.state_dir).load() == []
        await m.close()

    run(go())


def test_release_of_a_vanished_pod_is_sent_from_the_node(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        rig.factory.gone = True  # the netns went before the DEL
        assert await m.release(lease.key) is True
        (rel,) = rig.server.of_type(MessageType.RELEASE)
        assert rel.src == lease.address.ip and rel.dst_mac == SERVER_MAC
        assert rel.msg.options[Opt.CLIENT_ID] == lease.client_id
        assert rel.msg.chaddr == codec.mac_bytes(POD_MAC)
        assert rig.server.released == [lease.address.ip]
        assert Journal(rig.state_dir).load() == []
        await m.close()

    run(go())


def test_start_releases_leases_of_vanished_pods_from_the_node(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.close()  # the agent stops; the pod is removed meanwhile
        rig.factory.gone = True
        m2 = rig.manager()
        await m2.start()
        assert rig.server.released == [lease.address.ip]
        assert rig.factory.node_opened == [lease.key]
        assert m2.leases() == [] and Journal(rig.state_dir).load() == []
        await m2.close()

    run(go())


def test_without_a_node_transport_a_vanished_pod_is_only_dropped(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        await m.acquire(rig.request())
        await m.close()
        rig.factory.gone = True
        m2 = rig.manager(node_transports=None)
        await m2.start()
        assert rig.server.released == [] and Journal(rig.state_dir).load() == []
        await m2.close()

    run(go())


def test_second_live_sandbox_gets_its_own_client_id(rig: Rig) -> None:
    usual = client_id_for("default", "web-0", "c1", "lan", "eth0")

    async def go() -> None:
        m = rig.manager()
        first = await m.acquire(rig.request())
        assert m.claim_client_id("lan/c1/eth0", usual, b"unused") == usual  # its own: kept
        m.unclaim("lan/c1/eth0")
        alone = client_id_for("default", "web-0", "c2", "lan", "eth0", per_sandbox=True)
        assert alone != usual and b"@c2" in alone
        # c2 and c3: two more sandboxes of web-0 while c1 lives, claimed before either leases
        assert m.claim_client_id("lan/c2/eth0", usual, alone) == alone
        alone3 = client_id_for("default", "web-0", "c3", "lan", "eth0", per_sandbox=True)
        assert m.claim_client_id("lan/c3/eth0", usual, alone3) == alone3
        assert m.claim_client_id("lan/c2/eth0", usual, alone) == alone  # asked again: same
        # the address book would send c2 to c1's live address: the hint is dropped
        second = await m.acquire(
            rig.request(key="lan/c2/eth0", client_id=alone, prefer_address=first.address.ip)
        )
        m.unclaim("lan/c2/eth0")
        m.unclaim("lan/c3/eth0")
        assert second.address != first.address
        discover = rig.server.of_type(MessageType.DISCOVER)[-1].msg
        assert Opt.REQUESTED_IP not in discover.options
        assert m.held_by_other(first.address.ip, "lan/c2/eth0") == "lan/c1/eth0"
        assert m.held_by_other(first.address.ip, "lan/c1/eth0") is None
        # both gone: the usual identity is free again
        await m.release("lan/c1/eth0")
        await m.release("lan/c2/eth0")
        assert m.claim_client_id("lan/c4/eth0", usual, b"unused") == usual
        await m.close()

    run(go())


# -- release, forget, close, restart ---------------------------------------------------------


def test_release_sends_unicast_release_with_ciaddr(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        assert await m.release(lease.key) is True
        (rel,) = rig.server.of_type(MessageType.RELEASE)
        assert not rel.broadcast and rel.src == lease.address.ip and rel.dst_mac == SERVER_MAC
        assert rel.msg.ciaddr == lease.address.ip
        assert rel.msg.options[Opt.SERVER_ID] == SERVER_IP.packed
        assert rel.msg.options[Opt.CLIENT_ID] == lease.client_id
        assert Opt.REQUESTED_IP not in rel.msg.options
        assert rig.server.released == [lease.address.ip]
        assert m.get(lease.key) is None and Journal(rig.state_dir).load() == []
        assert await m.release(lease.key) is False
        # same client id again: same address
        again = await m.acquire(rig.request())
        assert again.address == lease.address
        await m.close()

    run(go())


def test_forget_drops_without_release(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.forget(lease.key)
        assert m.get(lease.key) is None and Journal(rig.state_dir).load() == []
        assert rig.server.of_type(MessageType.RELEASE) == []
        await m.close()

    run(go())


def test_restart_readopts_and_renews_on_time(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.close()
        assert rig.server.of_type(MessageType.RELEASE) == []  # close releases nothing
        sent_before = len(rig.server.seen)
        rig.clock.t += 30  # agent down for 30 s (T1 is at 60)
        m2 = rig.manager()
        await m2.start()
        adopted = m2.get(lease.key)
        assert adopted == lease
        await until(lambda: lease_of(m2).bound_at > lease.bound_at)
        new = rig.server.seen[sent_before:]
        assert [s.msg.message_type for s in new] == [MessageType.REQUEST]
        assert new[0].msg.ciaddr == lease.address.ip and not new[0].broadcast
        assert new[0].t == pytest.approx(lease.renew_at - rig.clock.epoch, abs=0.5)
        await m2.close()

    run(go())


def test_arp_probe_wait_of_the_request_is_used_and_kept_across_restarts(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        default = await m.acquire(rig.request(key="lan/default/eth0"))
        await m.release(default.key)
        lease = await m.acquire(rig.request(arp_probe_wait=0.5))
        assert rig.factory.probe_waits == [Timing().arp_probe_wait, 0.5]
        await m.close()
        # Restarted past expiry and NAKed: the re-acquisition probes as configured.
        rig.server.nak_requests = 1
        rig.clock.t += 300
        m2 = rig.manager()
        await m2.start()
        await until(lambda: len(rig.factory.probe_waits) == 3)
        await until(lambda: lease_of(m2, lease.key).state == BOUND)
        assert rig.factory.probe_waits[2] == 0.5
        assert lease_of(m2, lease.key).arp_probe_wait == 0.5
        await m2.close()

    run(go())


def test_restart_past_t2_uses_init_reboot_for_the_same_address(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.close()
        sent_before = len(rig.server.seen)
        rig.clock.t += 300  # down past expiry
        m2 = rig.manager()
        await m2.start()
        await until(lambda: lease_of(m2).state == BOUND)
        first = rig.server.seen[sent_before]
        assert first.msg.message_type == MessageType.REQUEST and first.broadcast
        assert first.msg.ciaddr == codec.ZERO
        assert first.msg.options[Opt.REQUESTED_IP] == lease.address.ip.packed
        assert Opt.SERVER_ID not in first.msg.options
        assert lease_of(m2).address == lease.address
        assert rig.server.of_type(MessageType.DISCOVER)[1:] == []
        await m2.close()

    run(go())


def test_restart_init_reboot_nak_falls_back_to_init(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.close()
        rig.server.bindings.clear()
        rig.server.declined.add(lease.address.ip)  # the address went elsewhere
        rig.clock.t += 300
        m2 = rig.manager()
        await m2.start()
        await until(lambda: len(rig.changes) == 2)
        assert rig.changes[0] == (lease.with_state("REBOOTING"), None)
        new = rig.changes[1][1]
        assert new is not None and new.address != lease.address and new.state == BOUND
        await m2.close()

    run(go())


def test_start_survives_a_corrupt_journal(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request())
        await m.close()
        path = Journal(rig.state_dir).path_for(lease.key)
        path.write_bytes(path.read_bytes()[:50])
        m2 = rig.manager()
        await m2.start()
        assert m2.leases() == []
        await m2.close()

    run(go())
