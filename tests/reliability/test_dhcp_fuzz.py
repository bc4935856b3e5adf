"""DHCP input the client must survive: 10,000+ generated packets at the decoder, and
malformed replies on the wire, ahead of every real reply, while a pod holds its lease."""

from __future__ import annotations

import contextlib
import time
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.dhcp import codec
from cni_bridge_dhcp.agent.dhcp.codec import DecodeError, MessageType
from cni_bridge_dhcp.agent.dhcp.lease import ack_info
from testbed.fakedhcp import malformed_variants
from testbed.sandbox import ROUTER_IP, Sandbox, ping
from tests.e2e.helpers import add, agent_report, conflist
from tests.reliability.lib import (
    agent_daemon,
    events,
    journal,
    lease_key,
    pod_ipv4,
    start_fake_dhcp,
    wait_for,
)

XID = 0x5EED1234
MAC = bytes.fromhex("0a580a000001")
EXAMPLES = 10_000
INTERESTING = [0, 1, 3, 6, 12, 15, 26, 28, 33, 50, 51, 52, 53, 54, 55, 56, 58, 59, 61, 119, 121]


def _rarely(draw: st.DrawFn) -> bool:
    """True one time in ten: most fields stay plausible so that many packets get deep."""
    return draw(st.integers(0, 9)) == 0


@st.composite
def options_blob(draw: st.DrawFn, max_options: int = 8, lead_type: bool = False) -> bytes:
    """Option bytes, mostly well framed, sometimes lying about lengths or cut short."""
    out = bytearray()
    if lead_type and not _rarely(draw):
        out += bytes((53, 1, draw(st.sampled_from([2, 5, 6, 5, 2, 1, 3, 0, 9]))))
    for _ in range(draw(st.integers(0, max_options))):
        code = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
        if code == 53:
            value = bytes((draw(st.integers(0, 9)),))
        elif code == 52:
            value = bytes((draw(st.integers(0, 4)),))
        elif code in (1, 3, 6, 50, 51, 54, 58, 59):
            size = draw(st.integers(0, 9) if _rarely(draw) else st.sampled_from([4, 4, 4, 8]))
            value = draw(st.binary(min_size=size, max_size=size))
        elif _rarely(draw):
            value = draw(st.binary(min_size=200, max_size=600))
        else:
            value = draw(st.binary(max_size=40))
        for start in range(0, max(len(value), 1), 255):
            chunk = value[start : start + 255]
            length = draw(st.integers(0, 255)) if _rarely(draw) else len(chunk)
            out += bytes((code, length)) + chunk
    if not _rarely(draw):
        out.append(255)
    return bytes(out)


@st.composite
def dhcp_packets(draw: st.DrawFn) -> bytes:
    def maybe(usual: int, width: int = 255) -> int:
        return draw(st.integers(0, width)) if _rarely(draw) else usual

    fixed = bytearray(236)
    fixed[0] = maybe(2)
    fixed[1] = maybe(1)
    fixed[2] = maybe(6)
    fixed[4:8] = maybe(XID, 2**32 - 1).to_bytes(4, "big")
    fixed[16:20] = draw(st.binary(min_size=4, max_size=4))  # yiaddr
    fixed[28:34] = draw(st.binary(min_size=6, max_size=6)) if _rarely(draw) else MAC
    fixed[44:108] = draw(options_blob(3)).ljust(64, b"\0")[:64]  # sname (overload 2)
    fixed[108:236] = draw(options_blob(4)).ljust(128, b"\0")[:128]  # file (overload 1)
    cookie = draw(st.binary(min_size=4, max_size=4)) if _rarely(draw) else codec.MAGIC
    data = bytes(fixed) + cookie + draw(options_blob(lead_type=True))
    if _rarely(draw):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@pytest.mark.scenario("dhcp-fuzz")
@pytest.mark.timeout(900)
def test_decoder_survives_ten_thousand_generated_packets(figures: dict[str, Any]) -> None:
    seen = {"examples": 0, "decoded": 0, "accepted": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(dhcp_packets())
    def check(data: bytes) -> None:
        seen["examples"] += 1
        try:
            codec.decode(data)
            seen["decoded"] += 1
        except DecodeError:
            pass
        codec.parse_ip_udp(data)
        codec.parse_ip_udp(codec.build_ip_udp(data, src=IPv4Address(1), dst=IPv4Address(2)))
        types = [MessageType.OFFER, MessageType.ACK, MessageType.NAK]
        msg = codec.accept_reply(data, xid=XID, chaddr=MAC, types=types)
        if msg is None:
            return
        seen["accepted"] += 1
        assert msg.xid == XID and msg.chaddr == MAC and msg.op == codec.BOOTREPLY
        if msg.message_type == MessageType.NAK:
            return
        info = ack_info(msg, IPv4Address(ROUTER_IP))
        assert 0 < info.t1 < info.t2 < info.lease_time
        assert 0 <= info.address.network.prefixlen <= 32
        for raw in (msg.options.get(51), msg.options.get(54)):
            assert raw is None or len(raw) == 4

    started = time.monotonic()
    check()
    figures["generated packets"] = seen["examples"]
    figures["well-formed"] = seen["decoded"]
    figures["accepted as replies"] = seen["accepted"]
    figures["seconds"] = round(time.monotonic() - started, 1)
    assert seen["examples"] >= EXAMPLES


@pytest.mark.scenario("dhcp-wire")
def test_every_wire_variant_is_rejected_by_the_client_code() -> None:
    """The variants fakedhcp sends must each be unacceptable, or the wire test proves less."""
    good = codec.encode(
        codec.Message(
            op=codec.BOOTREPLY,
            xid=XID,
            chaddr=MAC,
            yiaddr=IPv4Address("192.168.77.150"),
            options={53: b"\x05", 54: IPv4Address(ROUTER_IP).packed, 51: b"\x00\x00\x00\x1e"},
        )
    )
    variants = malformed_variants(good, IPv4Address(ROUTER_IP), IPv4Address("192.168.77.150"))
    assert len(variants) >= 20
    for name, packet in variants:
        dgram = codec.parse_ip_udp(packet)
        if dgram is None or dgram.dport != 68:
            continue
        accepted = codec.accept_reply(dgram.payload, xid=XID, chaddr=MAC, types=[MessageType.ACK])
        assert accepted is None, f"variant {name!r} would be accepted"


LEASE = 8  # T1 4 s: a renewal, with its burst of malformed replies, every 4 s


@pytest.mark.scenario("dhcp-wire")
def test_malformed_replies_on_the_wire_never_change_the_lease(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    log = start_fake_dhcp(sb, lease_time=LEASE, malformed_before_reply=True)
    agent = sb.start_agent()
    pod = sb.add_pod("wire")
    result = add(sb, pod, conflist(sb))
    address = result["ips"][0]["address"]
    key = lease_key(pod)

    def record() -> dict[str, Any]:
        (rec,) = [r for r in journal(sb) if r["key"] == key]
        return rec

    first = record()
    stable = ("address", "server_id", "router", "dns_servers", "lease_time", "t1", "t2", "mtu")
    renewals = 4
    wait_for(
        lambda: sum(1 for e in events(log) if e.get("sent") == "ACK") >= renewals + 1,
        (renewals + 2) * LEASE,
        f"{renewals} renewals",
    )
    wait_for(lambda: record()["bound_at"] > first["bound_at"], LEASE, "the journal to catch up")
    assert agent.alive(), sb.agent_stderr()[-2000:]
    last = record()
    assert {k: last[k] for k in stable} == {k: first[k] for k in stable}
    assert last["state"] == "BOUND"
    assert pod_ipv4(pod) == [address]
    (entry,) = agent_report(sb)["pods"]
    assert entry["lease"]["address"] == address and entry["lease"]["state"] == "BOUND"
    assert ping(pod.name, ROUTER_IP)
    assert agent_daemon(sb).pid == agent.pid  # never restarted

    evs = events(log)
    bursts = [e["malformed"] for e in evs if "malformed" in e]
    logs = sb.agent_logs()
    examined = logs.count("ignoring a packet that is not a reply")
    assert "Traceback" not in logs
    assert examined > 0, "the client never saw a malformed reply: the test proves nothing"
    figures["transactions with a burst"] = len(bursts)
    figures["malformed packets injected"] = sum(bursts)
    figures["variants"] = bursts[0] if bursts else 0
    figures["rejected by the DHCP layer (logged)"] = examined
    figures["lease changes"] = 0
    with contextlib.suppress(Exception):
        figures["renewals"] = sum(1 for e in evs if e.get("sent") == "ACK") - 1
