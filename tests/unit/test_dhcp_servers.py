"""Client behaviour that servers other than dnsmasq/ISC made visible (issue 12 item 9):
one identity (option 61, or none) in every message of a client, ipam.clientId, and a
slow server whose ACK comes after our REQUEST retransmissions ran out."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest

from cni_bridge_dhcp.agent.config import parse_netconf
from cni_bridge_dhcp.agent.dhcp import BOUND, codec
from cni_bridge_dhcp.agent.dhcp.client import DhcpClient
from cni_bridge_dhcp.agent.dhcp.codec import MessageType, Opt
from cni_bridge_dhcp.agent.dhcp.identity import wire_client_id
from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.agent.dhcp.messages import Identity
from cni_bridge_dhcp.agent.dhcp.session import Timing
from cni_bridge_dhcp.agent.dhcp.transport import Received, Target
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from tests.unit.test_dhcp_statemachine import (
    POD_MAC,
    SERVER_IP,
    SERVER_MAC,
    FakeClock,
    FakeFactory,
    Rig,
    lease_of,
    rig,
    run,
    until,
)

__all__ = ["rig"]  # the fixture, re-used

PROVIDED = b"\x00provided-by-config"
ALL_TYPES = [
    MessageType.DISCOVER,
    MessageType.REQUEST,
    MessageType.DECLINE,
    MessageType.RELEASE,
]


# -- the message builder: one identity in every message ----------------------------------


def _client(client_id: bytes, provide: tuple[tuple[int, bytes], ...] = ()) -> DhcpClient:
    ident = Identity(mac=POD_MAC, client_id=client_id, hostname="web-0", provide=provide)
    return DhcpClient(ident, label="t", clock=FakeClock(), timing=Timing())


def _built(client: DhcpClient) -> dict[str, codec.Message]:
    addr = IPv4Address("192.168.77.100")
    raw = {
        "DISCOVER": client._message(MessageType.DISCOVER, 1),
        "REQUEST(selecting)": client._message(
            MessageType.REQUEST, 2, requested=addr, server_id=SERVER_IP
        ),
        "REQUEST(init-reboot)": client._message(MessageType.REQUEST, 3, requested=addr),
        "REQUEST(renewing)": client._message(MessageType.REQUEST, 4, ciaddr=addr),
        "DECLINE": client._message(
            MessageType.DECLINE, 5, requested=addr, server_id=SERVER_IP, full=False
        ),
        "RELEASE": client._message(
            MessageType.RELEASE, 6, ciaddr=addr, server_id=SERVER_IP, full=False
        ),
        "INFORM": client._message(MessageType.INFORM, 7, ciaddr=addr),
    }
    return {name: codec.decode(payload) for name, payload in raw.items()}


@pytest.mark.parametrize(
    ("client_id", "provide", "expected"),
    [
        (b"\x00pod", (), b"\x00pod"),
        (b"\x00pod", ((Opt.CLIENT_ID, PROVIDED), (60, b"vendor")), PROVIDED),
        (b"\x01" + codec.mac_bytes(POD_MAC), (), b"\x01" + codec.mac_bytes(POD_MAC)),
        (b"", (), None),
    ],
    ids=["pod", "provided-61", "mac", "none"],
)
def test_every_message_type_carries_the_same_identity(
    client_id: bytes, provide: tuple[tuple[int, bytes], ...], expected: bytes | None
) -> None:
    for name, msg in _built(_client(client_id, provide)).items():
        assert msg.options.get(Opt.CLIENT_ID) == expected, name
        assert msg.chaddr == codec.mac_bytes(POD_MAC), name


def test_provided_options_other_than_61_stay_in_full_messages_only() -> None:
    built = _built(_client(b"\x00pod", ((60, b"vendor"),)))
    assert built["DISCOVER"].options[60] == b"vendor"
    assert 60 not in built["RELEASE"].options and 60 not in built["DECLINE"].options


def test_wire_client_id_modes() -> None:
    mac = "0A:58:C0:A8:4D:02"
    assert wire_client_id("pod", b"\x00pod", mac) == b"\x00pod"
    assert wire_client_id("mac", b"\x00pod", mac) == b"\x01\x0a\x58\xc0\xa8\x4d\x02"
    assert wire_client_id("none", b"\x00pod", mac) == b""
    with pytest.raises(ValueError, match="clientId"):
        wire_client_id("uuid", b"\x00pod", mac)


# -- the same, through the state machine -----------------------------------------------------


def _ids_seen(r: Rig) -> set[bytes | None]:
    return {s.msg.options.get(Opt.CLIENT_ID) for s in r.server.seen}


def test_provided_client_id_in_discover_request_decline_release_and_renew(rig: Rig) -> None:
    rig.factory.in_use = {IPv4Address("192.168.77.100")}  # first offer declined

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request(provide=((Opt.CLIENT_ID, PROVIDED),)))
        rig.clock.t = lease.renew_at - rig.clock.epoch
        await until(lambda: lease_of(m).bound_at > lease.bound_at)
        assert await m.release(lease.key)
        types = {s.msg.message_type for s in rig.server.seen}
        assert types >= set(ALL_TYPES)
        assert _ids_seen(rig) == {PROVIDED}
        # the server, keyed by client id, really freed it (Kea refuses a wrong-id RELEASE)
        assert rig.server.released == [lease.address.ip]
        await m.close()

    run(go())


@pytest.mark.parametrize("mode", ["pod", "mac", "none"])
def test_client_id_mode_is_used_journaled_and_kept_after_restart(rig: Rig, mode: str) -> None:
    expected = {
        "pod": rig.request().client_id,
        "mac": b"\x01" + codec.mac_bytes(POD_MAC),
        "none": None,
    }[mode]

    async def go() -> None:
        m = rig.manager()
        lease = await m.acquire(rig.request(client_id_mode=mode))
        assert lease.client_id_mode == mode
        (journaled,) = Journal(rig.state_dir).load()
        assert journaled.client_id_mode == mode
        await m.close()
        m2 = rig.manager()
        await m2.start()
        rig.clock.t = lease.renew_at - rig.clock.epoch
        await until(lambda: lease_of(m2).bound_at > lease.bound_at)
        assert await m2.release(lease.key)
        assert _ids_seen(rig) == {expected}
        assert rig.server.released == [lease.address.ip]
        await m2.close()

    run(go())


def test_journal_record_without_mode_reads_as_pod(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        await m.acquire(rig.request())
        await m.close()

    run(go())
    path = next((rig.state_dir).rglob("*.json"))
    record = json.loads(path.read_text())
    assert record.pop("client_id_mode") == "pod"
    path.write_text(json.dumps(record))  # as an agent from before the key wrote it
    (lease,) = Journal(rig.state_dir).load()
    assert lease.client_id_mode == "pod"


@pytest.mark.parametrize("mode", ["pod", "mac", "none"])
def test_config_client_id_values(mode: str) -> None:
    conf = parse_netconf(
        {
            "cniVersion": "1.0.0",
            "name": "lan",
            "type": "x",
            "ipam": {"type": "dhcp", "clientId": mode},
        }
    )
    assert conf.ipam is not None and conf.ipam.client_id == mode


def test_config_client_id_default_is_pod() -> None:
    conf = parse_netconf(
        {"cniVersion": "1.0.0", "name": "lan", "type": "x", "ipam": {"type": "dhcp"}}
    )
    assert conf.ipam is not None and conf.ipam.client_id == "pod"


@pytest.mark.parametrize(
    "ipam",
    [
        {"clientId": "hw"},
        {"clientId": 1},
        {"clientId": "mac", "provide": [{"option": "dhcp-client-identifier", "value": "x"}]},
        {"clientId": "none", "provide": [{"option": "61", "fromArg": "K8S_POD_UID"}]},
    ],
)
def test_config_bad_client_id_is_code_7_naming_the_key(ipam: dict[str, Any]) -> None:
    raw = {"cniVersion": "1.0.0", "name": "lan", "type": "x", "ipam": {"type": "dhcp", **ipam}}
    with pytest.raises(CNIError) as err:
        parse_netconf(raw)
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert "ipam.clientId" in err.value.msg


# -- a slow server: late ACKs are taken, anything acknowledged and not kept is released ------


@dataclass
class _Pending:
    ready: float
    rx: Received


@dataclass
class SlowFactory(FakeFactory):
    """Replies arrive ``delay`` seconds after the request (udhcpd ARP-pinging, busy)."""

    delay: float = 0.0
    transports: list[SlowTransport] = field(default_factory=list)

    def reply_delay(self, reply: bytes) -> float:
        return self.delay

    async def open(
        self, target: Target, *, bring_up: bool = False, unicast_from: IPv4Address | None = None
    ) -> Any:
        tr = SlowTransport(self)
        self.transports.append(tr)
        self.opened.append(tr)  # type: ignore[arg-type]
        return tr


class SlowTransport:
    mtu = 1500

    def __init__(self, f: SlowFactory) -> None:
        self.f = f
        self.pending: list[_Pending] = []
        self.closed = False

    def _deliver(self, replies: list[bytes]) -> None:
        now = self.f.clock.t
        self.pending.extend(
            _Pending(now + self.f.reply_delay(r), Received(r, self.f.server.ip, SERVER_MAC))
            for r in replies
        )

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = codec.ZERO) -> None:
        self._deliver(self.f.server.handle(payload, broadcast=True, src=src))

    async def send_unicast(
        self, payload: bytes, *, src: IPv4Address, dst: IPv4Address, dst_mac: str | None
    ) -> None:
        if dst == self.f.server.ip:
            self._deliver(self.f.server.handle(payload, broadcast=False, src=src, dst_mac=dst_mac))

    async def recv(self, timeout: float) -> Received | None:
        now = self.f.clock.t
        for p in self.pending:
            if p.ready <= now:
                self.pending.remove(p)
                return p.rx
        nxt = min((p.ready for p in self.pending), default=now + timeout)
        await self.f.clock.sleep(min(timeout, max(0.0, nxt - now)))
        return None

    async def arp_probe(self, address: IPv4Address, wait: float, probes: int) -> bool:
        self.f.probes.append(address)
        return address in self.f.in_use

    def close(self) -> None:
        self.closed = True


def _slow_rig(r: Rig, delay: float) -> SlowFactory:
    f = SlowFactory(r.clock, r.server, delay=delay)
    r.factory = f
    return f


def test_late_ack_after_request_retransmissions_is_taken(rig: Rig) -> None:
    # Every reply comes 6 s late: later than the 4 REQUESTs of one pass (~4.5 s +-25 %),
    # so the ACK for the first xid arrives while the client is in its second INIT pass.
    _slow_rig(rig, 6.0)

    async def go() -> None:
        m = rig.manager(rng=random.Random(7))
        lease = await m.acquire(rig.request(timeout=30.0))
        assert lease.state == BOUND
        first_xid = rig.server.of_type(MessageType.DISCOVER)[0].msg.xid
        assert lease.address.ip == rig.server.bindings[rig.request().client_id]
        assert rig.clock.t < 15.0, "the first ACK (at ~12 s) was taken"
        requests = rig.server.of_type(MessageType.REQUEST)
        assert requests[0].msg.xid == first_xid
        assert rig.server.of_type(MessageType.RELEASE) == []  # the lease it bound is kept
        await m.close()

    run(go())


def test_failed_add_releases_what_was_acknowledged(rig: Rig) -> None:
    # The server is so slow that its ACKs come after ipam.timeout: ADD fails with 100,
    # and the REQUESTed (possibly committed) address is released, not left to leak.
    _slow_rig(rig, 9.0)

    async def go() -> None:
        m = rig.manager(rng=random.Random(3))
        with pytest.raises(CNIError) as err:
            await m.acquire(rig.request(timeout=12.0))
        assert err.value.code == ErrorCode.DHCP_TIMEOUT
        assert rig.server.of_type(MessageType.REQUEST), "a REQUEST was sent"
        releases = rig.server.of_type(MessageType.RELEASE)
        assert releases, "no RELEASE after a failed exchange"
        assert all(r.dst_mac == SERVER_MAC and not r.broadcast for r in releases)
        assert rig.server.bindings == {}, "the server still holds a lease for the failed ADD"
        await m.close()

    run(go())


@dataclass
class _PickyFactory(SlowFactory):
    """ACKs of ``late_address`` come ``late_by`` seconds late; everything else at once."""

    late_address: IPv4Address = field(default_factory=lambda: IPv4Address("192.168.77.100"))
    late_by: float = 20.0

    def reply_delay(self, reply: bytes) -> float:
        msg = codec.decode(reply)
        late = msg.message_type == MessageType.ACK and msg.yiaddr == self.late_address
        return self.late_by if late else 0.0


def test_abandoned_request_is_released_once_bound_elsewhere(rig: Rig) -> None:
    # Pass 1 REQUESTs .100 and hears nothing in time (its ACK is 20 s late); the server
    # then offers .101 and pass 2 binds it. .100 may be committed to us at the server:
    # it is released, .101 is not.
    f = _PickyFactory(rig.clock, rig.server)
    rig.factory = f
    server = rig.server
    first = IPv4Address("192.168.77.100")
    orig = server.handle

    answered: list[bytes] = []

    def handle(payload: bytes, **kw: Any) -> list[bytes]:
        msg = codec.decode(payload)
        if msg.message_type == MessageType.REQUEST and msg.options.get(Opt.REQUESTED_IP) == (
            first.packed
        ):
            if answered:
                return []  # busy: retransmissions go unanswered
            answered.append(payload)
            out = orig(payload, **kw)  # binds .100 to us; its ACK is 20 s late
            server.bindings = {b"another client": first}  # so the next offer is .101
            return out
        return orig(payload, **kw)

    server.handle = handle  # type: ignore[method-assign]

    async def go() -> None:
        m = rig.manager(rng=random.Random(5))
        lease = await m.acquire(rig.request(timeout=30.0))
        assert lease.address.ip == IPv4Address("192.168.77.101")
        released = server.of_type(MessageType.RELEASE)
        assert [s.msg.ciaddr for s in released] == [first]
        assert released[0].dst_mac == SERVER_MAC and not released[0].broadcast
        await m.close()

    run(go())
