"""DHCP trust (issue 12 item 5): an allowed server bound to its link-layer source (learned at
the first lease or pinned with ``ip@mac``), and the ARP probe of an address the server moves
the pod to at renewal. On the fake clock, fake transport and scripted server of
test_dhcp_statemachine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cni_bridge_dhcp.agent.config import IPAMConf
from cni_bridge_dhcp.agent.dhcp import BOUND, EXPIRED, codec
from cni_bridge_dhcp.agent.dhcp.codec import Message, MessageType, Opt
from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.agent.dhcp.servermacs import ServerMacs
from cni_bridge_dhcp.agent.dhcp.transport import Received
from tests.unit.test_dhcp_statemachine import (
    SERVER_IP,
    SERVER_MAC,
    FakeFactory,
    FakeServer,
    FakeTransport,
    Rig,
    lease_of,
    rig,
    run,
    until,
)

__all__ = ["rig"]  # the fixture, re-exported for pytest

ROGUE_MAC = "02:00:00:00:00:66"


# -- (a) the allowed server is bound to its MAC ---------------------------------------------


class RogueServer(FakeServer):
    """Writes the real server's id (option 54) into its replies, hands out its own pool."""

    def _free(self, cid: bytes, want: IPv4Address | None) -> IPv4Address:
        if cid in self.bindings:
            return self.bindings[cid]
        return IPv4Address(f"192.168.77.{50 + len(self.bindings)}")

    def handle(
        self, payload: bytes, *, broadcast: bool, src: IPv4Address, dst_mac: str | None = None
    ) -> list[bytes]:
        msg = codec.decode(payload)
        if msg.message_type == MessageType.REQUEST and msg.ciaddr == codec.ZERO:
            # ACK whatever is asked for our (forged) id, as a rogue wanting the pod would
            raw = msg.options.get(Opt.REQUESTED_IP)
            if raw is not None and self.up:
                self.bindings[msg.options[Opt.CLIENT_ID]] = IPv4Address(raw)
        return super().handle(payload, broadcast=broadcast, src=src, dst_mac=dst_mac)


class RacedTransport(FakeTransport):
    """The rogue's replies (from ROGUE_MAC) arrive ahead of the real server's."""

    def __init__(self, factory: RacedFactory) -> None:
        super().__init__(factory)
        self.raced = factory

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = codec.ZERO) -> None:
        rogue = self.raced.rogue.handle(payload, broadcast=True, src=src)
        self.queue.extend(Received(r, SERVER_IP, ROGUE_MAC) for r in rogue)
        await super().send_broadcast(payload, src=src)


@dataclass
class RacedFactory(FakeFactory):
    rogue: RogueServer | None = None  # type: ignore[assignment]

    async def open(self, target: Any, **kw: Any) -> FakeTransport:
        await super().open(target, **kw)
        tr = RacedTransport(self)
        self.opened[-1] = tr
        return tr


@pytest.fixture
def raced(rig: Rig) -> Rig:
    rogue = RogueServer(rig.clock)
    rogue.up = False
    rig.factory = RacedFactory(rig.clock, rig.server, rogue=rogue)
    return rig


def _rogue(r: Rig) -> RogueServer:
    assert isinstance(r.factory, RacedFactory) and r.factory.rogue is not None
    return r.factory.rogue


def test_control_without_allow_list_the_forging_rogue_wins(raced: Rig) -> None:
    _rogue(raced).up = True

    async def go() -> None:
        m = raced.manager()
        lease = await m.acquire(raced.request())
        assert lease.address.ip == IPv4Address("192.168.77.50")  # the race is real
        await m.close()

    run(go())


def test_learned_server_mac_rejects_a_rogue_forging_the_server_id(
    raced: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        m = raced.manager()
        first = await m.acquire(raced.request(server_allow_list=(SERVER_IP,)))
        assert first.server_mac == SERVER_MAC
        # learned for the node: a pod that never saw the server is protected too
        assert ServerMacs(raced.state_dir).get("lan", SERVER_IP) == SERVER_MAC
        _rogue(raced).up = True
        second = await m.acquire(
            raced.request(key="lan/c2/eth0", server_allow_list=(SERVER_IP,), client_id=b"\x00c2")
        )
        assert second.address.ip != IPv4Address("192.168.77.50")
        assert 100 <= second.address.ip.packed[3] < 200 and second.server_mac == SERVER_MAC
        assert _rogue(raced).of_type(MessageType.DISCOVER), "the rogue never heard a DISCOVER"
        await m.close()

    caplog.set_level(logging.WARNING)
    run(go())
    warned = [r.getMessage() for r in caplog.records if ROGUE_MAC in r.getMessage()]
    assert warned and SERVER_MAC in warned[0] and str(SERVER_IP) in warned[0]
    assert len(warned) == 1, "one warning per rogue MAC, not one per packet"


def test_a_new_agent_uses_the_learned_table(raced: Rig) -> None:
    async def go() -> None:
        m = raced.manager()
        await m.acquire(raced.request(server_allow_list=(SERVER_IP,)))
        await m.release("lan/c1/eth0")
        await m.close()
        _rogue(raced).up = True
        m2 = raced.manager()
        await m2.start()
        lease = await m2.acquire(raced.request(key="lan/c3/eth0", server_allow_list=(SERVER_IP,)))
        assert lease.server_mac == SERVER_MAC and lease.address.ip.packed[3] >= 100
        await m2.close()

    run(go())


def test_pinned_mac_protects_the_very_first_lease(raced: Rig) -> None:
    _rogue(raced).up = True

    async def go() -> None:
        m = raced.manager()
        lease = await m.acquire(
            raced.request(server_allow_list=(SERVER_IP,), server_macs=((SERVER_IP, SERVER_MAC),))
        )
        assert lease.server_mac == SERVER_MAC and lease.address.ip.packed[3] >= 100
        assert lease.server_macs == ((SERVER_IP, SERVER_MAC),)
        (journaled,) = Journal(raced.state_dir).load()
        assert journaled.server_macs == lease.server_macs
        await m.close()

    run(go())


def test_a_pin_is_never_learned_from_the_wrong_mac(raced: Rig) -> None:
    # pinned to a MAC nobody uses: every reply is refused, nothing is learned
    async def go() -> None:
        m = raced.manager()
        with pytest.raises(Exception, match="no DHCP lease"):
            await m.acquire(
                raced.request(
                    timeout=3.0,
                    server_allow_list=(SERVER_IP,),
                    server_macs=((SERVER_IP, "02:00:00:00:00:99"),),
                )
            )
        assert ServerMacs(raced.state_dir).get("lan", SERVER_IP) is None
        await m.close()

    run(go())


def test_without_allow_list_nothing_is_learned(rig: Rig) -> None:
    async def go() -> None:
        m = rig.manager()
        await m.acquire(rig.request())
        assert ServerMacs(rig.state_dir).get("lan", SERVER_IP) is None
        await m.close()

    run(go())


def test_server_macs_table_survives_garbage(tmp_path: Path) -> None:
    table = ServerMacs(tmp_path)
    table.path.parent.mkdir(parents=True, exist_ok=True)
    table.path.write_text('{"servers": [1, 2]}')
    assert table.get("lan", SERVER_IP) is None  # wrong shape: ignored, set aside
    assert table.learn("lan", SERVER_IP, SERVER_MAC)
    assert not table.learn("lan", SERVER_IP, ROGUE_MAC)  # first one stays
    assert ServerMacs(tmp_path).get("lan", SERVER_IP) == SERVER_MAC
    assert ServerMacs(tmp_path).get("other", SERVER_IP) is None  # per network


@pytest.mark.parametrize(
    ("entries", "ips", "macs"),
    [
        (["192.168.77.1"], ["192.168.77.1"], {}),
        (
            ["192.168.77.1@02:00:00:00:00:AA", "192.168.77.2"],
            ["192.168.77.1", "192.168.77.2"],
            {"192.168.77.1": "02:00:00:00:00:aa"},
        ),
    ],
)
def test_server_allow_list_accepts_ip_at_mac(
    entries: list[str], ips: list[str], macs: dict[str, str]
) -> None:
    conf = IPAMConf.model_validate({"type": "dhcp", "serverAllowList": entries})
    assert [str(a) for a in conf.server_allow_list] == ips
    assert {str(k): v for k, v in conf.server_macs.items()} == macs


@pytest.mark.parametrize(
    "entry", ["192.168.77.1@02:00:00:00:00", "192.168.77.1@", "rogue@02:00:00:00:00:01"]
)
def test_server_allow_list_rejects_bad_pins(entry: str) -> None:
    with pytest.raises(ValidationError) as exc:
        IPAMConf.model_validate({"type": "dhcp", "serverAllowList": [entry]})
    assert "serverAllowList" in str(exc.value) or "server_allow_list" in str(exc.value)


# -- (d) an address moved at renewal is probed -------------------------------------------------


class MovingServer(FakeServer):
    """ACKs every renewal with the next address, as a server that moved the lease would."""

    def handle(
        self, payload: bytes, *, broadcast: bool, src: IPv4Address, dst_mac: str | None = None
    ) -> list[bytes]:
        msg = codec.decode(payload)
        cid = msg.options.get(Opt.CLIENT_ID, b"")
        if (
            self.up
            and msg.message_type == MessageType.REQUEST
            and msg.ciaddr != codec.ZERO
            and self.bindings.get(cid) == msg.ciaddr
        ):
            self.seen.append(_seen(self, msg, broadcast, src, dst_mac))
            moved = IPv4Address(int(msg.ciaddr) + 1)
            if moved in self.declined:
                moved = msg.ciaddr  # a declined address is not handed out again
            self.bindings[cid] = moved
            return [self._reply(msg, MessageType.ACK, moved)]
        return super().handle(payload, broadcast=broadcast, src=src, dst_mac=dst_mac)


def _seen(
    s: FakeServer, msg: Message, broadcast: bool, src: IPv4Address, dst_mac: str | None
) -> Any:
    from tests.unit.test_dhcp_statemachine import Seen

    return Seen(s.clock.t, msg, broadcast, src, dst_mac)


@pytest.fixture
def moving(rig: Rig) -> Rig:
    rig.server = MovingServer(rig.clock)
    rig.factory = FakeFactory(rig.clock, rig.server)
    return rig


def test_address_moved_at_renewal_is_probed_before_use(moving: Rig) -> None:
    async def go() -> None:
        m = moving.manager()
        lease = await m.acquire(moving.request(arp_probe_wait=0.5))
        moved = IPv4Address(int(lease.address.ip) + 1)
        await until(lambda: lease_of(m).address.ip == moved, steps=500_000)
        assert moving.factory.probes == [lease.address.ip, moved]
        assert moving.factory.probe_waits == [0.5, 0.5]  # ipam.arpProbeWait honoured
        assert moving.changes == [(lease.with_state("RENEWING"), lease_of(m))]
        await m.close()

    run(go())


def test_address_moved_at_renewal_onto_a_squatter_is_declined_and_reinit(moving: Rig) -> None:
    async def go() -> None:
        m = moving.manager()
        lease = await m.acquire(moving.request())
        moved = IPv4Address(int(lease.address.ip) + 1)
        moving.factory.in_use = {moved}
        await until(lambda: bool(moving.server.of_type(MessageType.DECLINE)), steps=500_000)
        (decline,) = moving.server.of_type(MessageType.DECLINE)
        assert decline.msg.options[Opt.REQUESTED_IP] == moved.packed
        assert decline.msg.options[Opt.SERVER_ID] == SERVER_IP.packed
        # the squatted address never reached the pod; the old one came off (the server
        # moved the lease away from it); INIT found a free one
        await until(lambda: lease_of(m).state == BOUND and len(moving.changes) >= 2, steps=500_000)
        final = lease_of(m)
        assert final.address.ip != moved
        assert moving.server.bindings[moving.request().client_id] == final.address.ip
        assert all(new is None or new.address.ip != moved for _old, new in moving.changes)
        assert moving.changes[0] == (lease.with_state("RENEWING"), None)
        assert moving.changes[1] == (None, final)
        assert moving.factory.probes[-2:] == [moved, final.address.ip]
        await m.close()

    run(go())


def test_arp_probe_wait_zero_skips_the_probe_of_a_moved_address(moving: Rig) -> None:
    async def go() -> None:
        m = moving.manager()
        lease = await m.acquire(moving.request(arp_probe_wait=0.0))
        moved = IPv4Address(int(lease.address.ip) + 1)
        moving.factory.in_use = {moved}  # unseen without a probe: the admin's choice
        await until(lambda: lease_of(m).address.ip == moved, steps=500_000)
        assert EXPIRED not in {lease_of(m).state}
        await m.close()

    run(go())


def test_removing_a_learned_entry_takes_effect_without_a_restart(raced: Rig) -> None:
    # the documented way out when the real server's MAC changed (NIC replaced)
    async def go() -> None:
        m = raced.manager()
        await m.acquire(raced.request(server_allow_list=(SERVER_IP,)))
        ServerMacs(raced.state_dir).path.unlink()
        # the old NIC is gone: otherwise the first lease's renewal, answered from the old MAC
        # while the fake clock runs, may re-learn it before the new one is seen
        raced.server.up = False
        _rogue(raced).up = True  # plays the server with its new MAC here
        lease = await m.acquire(raced.request(key="lan/c4/eth0", server_allow_list=(SERVER_IP,)))
        assert lease.server_mac == ROGUE_MAC
        assert ServerMacs(raced.state_dir).get("lan", SERVER_IP) == ROGUE_MAC
        await m.close()

    run(go())
