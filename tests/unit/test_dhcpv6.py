"""DHCPv6 (dhcp/v6): the codec on good and hostile input, the client's exchanges and
retransmission against a fake server on a fake clock, the lease deadlines and journal,
the pod identity, and the manager's upkeep (RENEW at T1, REBIND at T2, loss at expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.dhcp.identity import stable_mac_for
from cni_bridge_dhcp.agent.dhcp.v6 import codec
from cni_bridge_dhcp.agent.dhcp.v6.client import (
    Bound6,
    Dhcp6Client,
    Dhcp6Timeout,
    Identity6,
    Lost6,
    Timing6,
)
from cni_bridge_dhcp.agent.dhcp.v6.codec import IaAddress, IaNa, Message6, Status
from cni_bridge_dhcp.agent.dhcp.v6.identity import duid_ll, iaid_for
from cni_bridge_dhcp.agent.dhcp.v6.lease import (
    Journal6,
    Lease6,
    Lease6Request,
    Lease6State,
    bind6,
    from_record,
    to_record,
)
from cni_bridge_dhcp.agent.dhcp.v6.manager import Lease6Manager
from cni_bridge_dhcp.agent.dhcp.v6.transport import Target6, Transport6
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode

DUID = duid_ll(stable_mac_for("default", "web-0", "c1", "lan", "eth0"))
IAID = iaid_for(DUID)
SERVER_DUID = b"\x00\x01\x00\x01" + bytes(range(10))
SERVER = IPv6Address("fe80::1")
ADDR = IPv6Address("fd77:77::1000")

# -- codec ---------------------------------------------------------------------------------


def test_round_trip_of_every_option() -> None:
    msg = Message6(
        codec.REPLY,
        0xABCDEF,
        client_id=DUID,
        server_id=SERVER_DUID,
        ia_na=(
            IaNa(
                IAID, 5, 8, (IaAddress(ADDR, 15, 20, Status(0, "ok")),), Status(codec.SUCCESS, "")
            ),
        ),
        oro=(23, 24),
        elapsed=1234,
        status=Status(codec.SUCCESS, "all fine"),
        preference=255,
        rapid_commit=True,
        dns_servers=(IPv6Address("fd77:77::53"), IPv6Address("2001:db8::53")),
        domains=("v6.lan.test", "example.org"),
        other=((99, b"\x01\x02"),),
    )
    assert codec.decode(codec.encode(msg)) == msg


def test_known_bytes_of_a_solicit() -> None:
    # RFC 8415 layout: type, xid, then CLIENTID(1), IA_NA(3), ORO(6), ELAPSED_TIME(8)
    client = Dhcp6Client(Identity6(b"\x00\x03\x00\x01\xaa\xbb\xcc\xdd\xee\xff", 7), clock=Clock())
    raw = client._message(codec.SOLICIT, 0x010203, 0)
    assert raw.hex() == (
        "01010203"
        "0001000a00030001aabbccddeeff"
        "0003000c000000070000000000000000"
        "00060004"
        "00170018"
        "000800020000"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x07\x00\x00",
        b"\x07\x00\x00\x01\x00\x01",  # truncated option header
        b"\x07\x00\x00\x01\x00\x01\x00\x10abc",  # option longer than the packet
        b"\x07\x00\x00\x01\x00\x03\x00\x04abcd",  # IA_NA shorter than 12
        b"\x07\x00\x00\x01\x00\x03\x00\x10" + bytes(12) + b"\x00\x05\x00\x30",  # IAADDR cut
        b"\x07\x00\x00\x01\x00\x18\x00\x02\x05a",  # domain label beyond the option
        b"\x07\x00\x00\x01\x00\x18\x00\x02\xc0\x0c",  # compression pointer
        b"\x07\x00\x00\x01\x00\x18\x00\x02\x01a",  # name not terminated
        b"\x07\x00\x00\x01\x00\x17\x00\x03abc",  # DNS_SERVERS not 16*n
        b"\x07\x00\x00\x01\x00\x01\x00\x01a",  # one-byte DUID
        b"\x07\x00\x00\x01\x00\x08\x00\x03abc",  # ELAPSED_TIME of 3 bytes
        b"\x07\x00\x00\x01\x00\x0d\x00\x01a",  # STATUS_CODE of 1 byte
    ],
)
def test_hostile_input_is_malformed_not_a_crash(raw: bytes) -> None:
    with pytest.raises(codec.Malformed):
        codec.decode(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_malformed(raw: bytes) -> None:
    with contextlib.suppress(codec.Malformed):
        codec.decode(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 400))
def test_truncating_a_valid_reply_never_crashes(tail: bytes, cut: int) -> None:
    raw = codec.encode(_reply(0x123456, domains=("a.b",))) + tail
    with contextlib.suppress(codec.Malformed):
        codec.decode(raw[:cut])


# -- the client on a fake server -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def _reply(
    xid: int,
    msg_type: int = codec.REPLY,
    *,
    address: IPv6Address = ADDR,
    valid: int = 20,
    status: Status | None = None,
    domains: tuple[str, ...] = (),
    preference: int | None = None,
    server_id: bytes = SERVER_DUID,
) -> Message6:
    addrs = (IaAddress(address, 15, valid),) if status is None else ()
    return Message6(
        msg_type,
        xid,
        client_id=DUID,
        server_id=server_id,
        ia_na=(IaNa(IAID, 5, 8, addrs, status),),
        dns_servers=(IPv6Address("fd77:77::53"),),
        domains=domains,
        preference=preference,
    )


Handler = Callable[[Message6], list[Message6]]


class FakeServer:
    """A transport whose far end is ``handler``; recv() without an answer lets the fake
    clock run to its timeout."""

    def __init__(self, clock: Clock, handler: Handler) -> None:
        self.clock = clock
        self.handler = handler
        self.sent: list[tuple[float, Message6]] = []
        self.queue: list[bytes] = []
        self.closed = 0

    async def send(self, payload: bytes) -> None:
        msg = codec.decode(payload)
        self.sent.append((self.clock.t, msg))
        self.queue += [codec.encode(m) for m in self.handler(msg)]

    async def recv(self, timeout: float) -> tuple[bytes, IPv6Address] | None:
        if self.queue:
            return self.queue.pop(0), SERVER
        self.clock.t += timeout
        return None

    def close(self) -> None:
        self.closed += 1


def good_server(msg: Message6) -> list[Message6]:
    if msg.msg_type == codec.SOLICIT:
        return [_reply(msg.xid, codec.ADVERTISE)]
    if msg.msg_type in (codec.REQUEST, codec.RENEW, codec.REBIND, codec.RELEASE):
        return [_reply(msg.xid)]
    return []


def _client(clock: Clock) -> Dhcp6Client:
    return Dhcp6Client(Identity6(DUID, IAID), clock=clock, rng=random.Random(1))


def test_solicit_advertise_request_reply() -> None:
    clock = Clock()
    server = FakeServer(clock, good_server)
    bound = asyncio.run(_client(clock).obtain(server, 10))
    assert bound.address == ADDR and bound.valid == 20 and bound.t1 == 5
    assert bound.dns_servers == (IPv6Address("fd77:77::53"),)
    kinds = [m.msg_type for _, m in server.sent]
    assert kinds == [codec.SOLICIT, codec.REQUEST]
    request = server.sent[1][1]
    assert request.server_id == SERVER_DUID and request.client_id == DUID
    assert request.ia_na[0].iaid == IAID and request.ia_na[0].addresses[0].address == ADDR
    assert set(request.oro) == {23, 24}
    # the first RT is waited out to collect ADVERTISEs (no preference 255)
    assert 1.0 <= clock.t <= 1.1 + 0.01


def test_preference_255_is_taken_at_once_and_the_best_offer_wins() -> None:
    clock = Clock()
    other = b"\x00\x03\x00\x01" + b"\x02" * 6

    def two(msg: Message6) -> list[Message6]:
        if msg.msg_type == codec.SOLICIT:
            return [
                _reply(msg.xid, codec.ADVERTISE, preference=10, server_id=other),
                _reply(msg.xid, codec.ADVERTISE, preference=255),
            ]
        return [_reply(msg.xid)] if msg.server_id == SERVER_DUID else []

    server = FakeServer(clock, two)
    asyncio.run(_client(clock).obtain(server, 10))
    assert server.sent[1][1].server_id == SERVER_DUID
    assert clock.t < 0.5  # 255: no waiting for the first RT


def test_foreign_replies_are_ignored() -> None:
    clock = Clock()

    def noisy(msg: Message6) -> list[Message6]:
        wrong_xid = _reply(msg.xid ^ 1, codec.ADVERTISE)
        wrong_duid = Message6(codec.ADVERTISE, msg.xid, client_id=b"\x00\x03\x00\x01" + bytes(6))
        return [wrong_xid, wrong_duid, *good_server(msg)]

    server = FakeServer(clock, noisy)
    server.queue.append(b"\x02garbage")
    bound = asyncio.run(_client(clock).obtain(server, 10))
    assert bound.address == ADDR


def test_solicit_retransmission_doubles_and_is_bounded_by_the_timeout() -> None:
    clock = Clock()
    server = FakeServer(clock, lambda msg: [])
    with pytest.raises(Dhcp6Timeout):
        asyncio.run(_client(clock).obtain(server, 10))
    times = [t for t, _ in server.sent]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.9 <= gaps[0] <= 1.1
    for a, b in itertools.pairwise(gaps):
        assert 1.7 * a <= b <= 2.3 * a  # RT = 2 RTprev +- 10 %
    assert clock.t <= 10.0 + 1e-6
    assert len(times) == 4  # 0, ~1, ~3, ~7


def test_no_addrs_avail_is_named_in_the_timeout() -> None:
    clock = Clock()

    def full(msg: Message6) -> list[Message6]:
        return [_reply(msg.xid, codec.ADVERTISE, status=Status(codec.NO_ADDRS_AVAIL, "full"))]

    with pytest.raises(Dhcp6Timeout, match="full"):
        asyncio.run(_client(clock).obtain(FakeServer(clock, full), 3))


def test_renew_no_binding_is_lost_and_lifetime_zero_is_lost() -> None:
    clock = Clock()

    def no_binding(msg: Message6) -> list[Message6]:
        return [_reply(msg.xid, status=Status(codec.NO_BINDING, "who?"))]

    result = asyncio.run(_client(clock).renew(FakeServer(clock, no_binding), SERVER_DUID, ADDR, 5))
    assert isinstance(result, Lost6) and "who?" in result.why

    def ended(msg: Message6) -> list[Message6]:
        return [_reply(msg.xid, valid=0)]

    result = asyncio.run(_client(clock).rebind(FakeServer(clock, ended), ADDR, 5))
    assert isinstance(result, Lost6)


def test_renew_retransmits_from_ren_timeout_until_its_bound() -> None:
    clock = Clock()
    server = FakeServer(clock, lambda msg: [])
    result = asyncio.run(_client(clock).renew(server, SERVER_DUID, ADDR, 25))
    assert result is None
    times = [t for t, _ in server.sent]
    assert len(times) == 2 and 9 <= times[1] <= 11  # REN_TIMEOUT 10 s, then the bound
    assert all(m.msg_type == codec.RENEW and m.server_id == SERVER_DUID for _, m in server.sent)


def test_release_waits_a_bounded_time() -> None:
    clock = Clock()
    server = FakeServer(clock, lambda msg: [])
    acked = asyncio.run(_client(clock).release(server, SERVER_DUID, ADDR))
    assert not acked and clock.t <= Timing6().release_wait + 1e-6
    clock2 = Clock()
    assert asyncio.run(_client(clock2).release(FakeServer(clock2, good_server), SERVER_DUID, ADDR))


# -- identity, lease, journal --------------------------------------------------------------


def test_identity_is_stable_per_pod_and_ifname() -> None:
    assert duid_ll(stable_mac_for("default", "web-0", "other-sandbox", "lan", "eth0")) == DUID
    assert duid_ll(stable_mac_for("default", "web-0", "c1", "lan", "net1")) != DUID
    assert duid_ll(stable_mac_for("default", "web-1", "c1", "lan", "eth0")) != DUID
    assert (
        duid_ll(stable_mac_for("default", "web-0", "c1", "lan", "eth0", per_sandbox=True)) != DUID
    )
    assert DUID[:4] == b"\x00\x03\x00\x01" and len(DUID) == 10
    assert iaid_for(DUID) == IAID and 0 <= IAID < 2**32


def _bound(t1: int = 5, t2: int = 8, preferred: int = 15, valid: int = 20) -> Bound6:
    return Bound6(SERVER_DUID, SERVER, ADDR, preferred, valid, t1, t2, (), (), 1000.0)


def _lease(**kw: int) -> Lease6:
    return bind6(
        _bound(**kw),
        key="lan/c1/eth0",
        netns_path="/run/netns/p",
        inode=42,
        ifname="eth0",
        duid=DUID,
        iaid=IAID,
        prefixlen=64,
        meta={"network": "lan"},
    )


def test_deadlines_from_the_exchange_start_and_default_t1_t2() -> None:
    lease = _lease()
    assert (lease.renew_at, lease.rebind_at, lease.expires_at) == (1005.0, 1008.0, 1020.0)
    assert lease.address == IPv6Interface(f"{ADDR}/64")
    zero = _lease(t1=0, t2=0, preferred=100, valid=200)
    assert (zero.renew_at, zero.rebind_at) == (1050.0, 1080.0)  # 0.5 and 0.8 of preferred
    assert lease.lifetimes_at(1010.0) == (5, 10)


def test_journal_round_trip_and_corrupt_record_set_aside(tmp_path: Path) -> None:
    lease = _lease()
    assert from_record(json.loads(json.dumps(to_record(lease)))) == lease
    journal = Journal6(tmp_path)
    journal.write(lease)
    assert journal.load() == [lease]
    bad = journal.path_for("lan/c2/eth0")
    bad.write_text('{"version": 1, "key": 5}')
    assert journal.load() == [lease]
    assert bad.with_name(bad.name + ".corrupt").exists()
    assert journal.remove(lease.key) and journal.load() == []


# -- the manager's upkeep ------------------------------------------------------------------


class FakeFactory:
    def __init__(self, clock: Clock, handler: Handler) -> None:
        self.server = FakeServer(clock, handler)
        self.present = True

    async def open(self, target: Target6) -> Transport6:
        return self.server

    async def exists(self, target: Target6) -> bool:
        return self.present


def _request(netns_fd: int) -> Lease6Request:
    return Lease6Request(
        key="lan/c1/eth0",
        netns_path="/proc/self/ns/net",
        netns_fd=netns_fd,
        ifname="eth0",
        duid=DUID,
        iaid=IAID,
        timeout=5,
        meta={},
    )


async def _plen(bound: Bound6) -> int:
    return 64


def _run_manager(
    tmp_path: Path, handler: Handler, until: Callable[[list[str]], bool]
) -> tuple[list[str], FakeFactory, Lease6Manager]:
    import os

    clock = Clock()
    factory = FakeFactory(clock, handler)
    changes: list[str] = []

    async def hook(key: str, old: Lease6 | None, new: Lease6 | None) -> None:
        changes.append("lost" if new is None else "regained" if old is None else "renewed")

    async def main() -> Lease6Manager:
        manager = Lease6Manager(
            tmp_path, clock=clock, transports=factory, on_change=hook, rng=random.Random(2)
        )
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            await manager.acquire(_request(fd), _plen)
        finally:
            os.close(fd)
        for _ in range(20000):
            if until(changes):
                break
            await asyncio.sleep(0)
        await manager.close()
        return manager

    return changes, factory, asyncio.run(main())


def test_upkeep_renews_at_t1(tmp_path: Path) -> None:
    changes, factory, manager = _run_manager(tmp_path, good_server, lambda c: len(c) >= 3)
    assert changes[:3] == ["renewed"] * 3
    kinds = [m.msg_type for _, m in factory.server.sent]
    assert kinds[:3] == [codec.SOLICIT, codec.REQUEST, codec.RENEW]
    assert factory.server.sent[2][0] >= 5.0  # not before T1
    assert manager.journal.load()[0].state == Lease6State.BOUND


def test_upkeep_rebinds_after_t2_then_loses_the_address_at_expiry(tmp_path: Path) -> None:
    def renewals_unanswered(msg: Message6) -> list[Message6]:
        return good_server(msg) if msg.msg_type in (codec.SOLICIT, codec.REQUEST) else []

    changes, factory, _manager = _run_manager(tmp_path, renewals_unanswered, lambda c: "lost" in c)
    assert changes[0] == "lost"
    sent = [(t, m.msg_type) for t, m in factory.server.sent]
    renews = [t for t, k in sent if k == codec.RENEW]
    rebinds = [t for t, k in sent if k == codec.REBIND]
    assert renews and min(renews) >= 5.0 and max(renews) < 8.0
    assert rebinds and min(rebinds) >= 8.0 and max(rebinds) < 20.0
    assert all(m.server_id is None for _, m in factory.server.sent if m.msg_type == codec.REBIND)


def test_acquire_timeout_is_cni_code_100_naming_dhcpv6(tmp_path: Path) -> None:
    import os

    clock = Clock()
    manager = Lease6Manager(tmp_path, clock=clock, transports=FakeFactory(clock, lambda m: []))

    async def main() -> None:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            await manager.acquire(_request(fd), _plen)
        finally:
            os.close(fd)

    with pytest.raises(CNIError) as info:
        asyncio.run(main())
    assert info.value.code == ErrorCode.DHCP_TIMEOUT and "DHCPv6" in info.value.msg
    assert manager.journal.load() == []


# -- config ----------------------------------------------------------------------------------


def _netconf(**ipam: object) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "lan",
        "type": "cni-bridge-dhcp",
        "ipam": {"type": "dhcp", **ipam},
    }


def test_ipam_dhcpv6_key() -> None:
    from cni_bridge_dhcp.agent.config import parse_netconf

    conf = parse_netconf(_netconf())
    assert conf.ipam is not None and conf.ipam.dhcpv6 is None  # follow the RA's M flag
    conf = parse_netconf(_netconf(dhcpv6=True))
    assert conf.ipam is not None and conf.ipam.dhcpv6 is True
    for bad in ({"dhcpv6": "yes please"}, {"dhcpv6": True, "ipv6": "off"}):
        with pytest.raises(CNIError) as info:
            parse_netconf(_netconf(**bad))
        assert info.value.code == ErrorCode.INVALID_CONFIG and "dhcpv6" in info.value.msg
