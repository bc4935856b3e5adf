"""Lease parameters from an ACK, T1/T2 sanitising, journal records, pod identities."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from cni_bridge_dhcp.agent.dhcp import client_id_for, codec, options, stable_mac_for
from cni_bridge_dhcp.agent.dhcp.codec import BOOTREPLY, Message, Opt
from cni_bridge_dhcp.agent.dhcp.journal import from_record, to_record
from cni_bridge_dhcp.agent.dhcp.lease import (
    BASE_REQUEST,
    Lease,
    ack_info,
    request_list,
    sanitize_times,
)

SERVER = IPv4Address("192.168.77.1")


@pytest.mark.parametrize(
    ("lease", "t1", "t2", "expected"),
    [
        (3600, None, None, (3600, 1800, 3150)),  # RFC 2131 defaults 0.5 / 0.875
        (3600, 600, 1200, (3600, 600, 1200)),  # server values kept
        (3600, 1200, 600, (3600, 600 * 0.5 / 0.875, 600)),  # T1 >= T2: T1 derived from T2
        (3600, 4000, 5000, (3600, 1800, 3150)),  # both past the lease
        (3600, 0, 0, (3600, 1800, 3150)),  # zero means absent
        (3600, 3150, None, (3600, 1800, 3150)),  # T1 == default T2 is not < T2
        (100, 60, 100, (100, 60, 87.5)),  # T2 == lease is not < lease
        (0, None, None, (4, 2, 3.5)),  # absurd lease: floored so timers cannot spin
    ],
)
def test_sanitize_times(
    lease: float, t1: float | None, t2: float | None, expected: tuple[float, float, float]
) -> None:
    got = sanitize_times(lease, t1, t2)
    assert got == pytest.approx(expected)
    assert 0 < got[1] < got[2] < got[0]


def test_request_list_has_the_base_codes_then_extras_once() -> None:
    assert request_list(()) == bytes(BASE_REQUEST)
    assert set(BASE_REQUEST) >= {1, 3, 6, 15, 26, 28, 51, 54, 58, 59, 119, 121}
    assert request_list((42, 3, 42, 0, 255)) == bytes((*BASE_REQUEST, 42))


def _ack(**options: bytes) -> Message:
    opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: b"\x05", Opt.LEASE_TIME: (600).to_bytes(4, "big")}
    for name, value in options.items():
        opts[Opt[name]] = value
    return Message(
        op=BOOTREPLY, xid=1, chaddr=b"\x02" * 6, yiaddr=IPv4Address("192.168.77.150"), options=opts
    )


def test_ack_info_decodes_everything_we_apply() -> None:
    info = ack_info(
        _ack(
            SUBNET_MASK=b"\xff\xff\xff\x00",
            ROUTER=IPv4Address("192.168.77.254").packed,
            DNS=IPv4Address("192.168.77.53").packed + IPv4Address("1.1.1.1").packed,
            DOMAIN=b"lan.test.\0",
            DOMAIN_SEARCH=options.encode_domain_search(["lan.test", "corp.test"]),
            INTERFACE_MTU=(1400).to_bytes(2, "big"),
            SERVER_ID=SERVER.packed,
            RENEWAL_TIME=(100).to_bytes(4, "big"),
        ),
        IPv4Address("10.9.9.9"),
    )
    assert info.address == IPv4Interface("192.168.77.150/24")
    assert info.server_id == SERVER
    assert info.router == IPv4Address("192.168.77.254")
    assert info.dns_servers == (IPv4Address("192.168.77.53"), IPv4Address("1.1.1.1"))
    assert info.domain == "lan.test"
    assert info.search == ("lan.test", "corp.test")
    assert info.mtu == 1400
    assert (info.lease_time, info.t1, info.t2) == (600, 100, 525)
    assert info.routes == ()


def test_classless_routes_override_router_and_static_routes() -> None:
    classless = options.encode_classless_routes(
        [
            (IPv4Network("10.0.0.0/8"), IPv4Address("192.168.77.2")),
            (IPv4Network("0.0.0.0/0"), IPv4Address("192.168.77.3")),
        ]
    )
    static = IPv4Address("172.16.0.0").packed + IPv4Address("192.168.77.4").packed
    info = ack_info(
        _ack(
            ROUTER=IPv4Address("192.168.77.254").packed,
            STATIC_ROUTES=static,
            CLASSLESS_ROUTES=classless,
        ),
        SERVER,
    )
    assert info.router == IPv4Address("192.168.77.3")  # from 121, option 3 ignored
    assert info.routes == (
        (IPv4Network("10.0.0.0/8"), IPv4Address("192.168.77.2")),
        (IPv4Network("0.0.0.0/0"), IPv4Address("192.168.77.3")),
    )
    without_default = options.encode_classless_routes(
        [(IPv4Network("10.0.0.0/8"), IPv4Address("192.168.77.2"))]
    )
    info = ack_info(
        _ack(ROUTER=IPv4Address("192.168.77.254").packed, CLASSLESS_ROUTES=without_default), SERVER
    )
    assert info.router is None


def test_static_routes_used_without_classless() -> None:
    static = IPv4Address("172.16.0.0").packed + IPv4Address("192.168.77.4").packed
    info = ack_info(_ack(ROUTER=IPv4Address("192.168.77.254").packed, STATIC_ROUTES=static), SERVER)
    assert info.router == IPv4Address("192.168.77.254")
    assert info.routes == ((IPv4Network("172.16.0.0/16"), IPv4Address("192.168.77.4")),)


def test_malformed_options_are_ignored_not_fatal() -> None:
    info = ack_info(
        _ack(
            ROUTER=b"\x01\x02\x03",
            DNS=b"",
            CLASSLESS_ROUTES=b"\x21\x00",
            DOMAIN_SEARCH=b"\xc0\x00",
            INTERFACE_MTU=(20).to_bytes(2, "big"),
            SUBNET_MASK=b"\xff\x00\xff\x00",
            SERVER_ID=b"\x01",
        ),
        SERVER,
    )
    assert info.router is None and info.dns_servers == () and info.search == ()
    assert info.mtu is None and info.routes == ()
    assert info.server_id == SERVER  # falls back to the packet's source
    assert info.address == IPv4Interface("192.168.77.150/24")  # classful fallback (class C)


def sample_lease(**kw: object) -> Lease:
    fields: dict[str, object] = dict(
        key="lan/abc123/eth0",
        address=IPv4Interface("192.168.77.150/24"),
        server_id=SERVER,
        server_mac="02:00:00:00:00:01",
        router=IPv4Address("192.168.77.1"),
        dns_servers=(IPv4Address("192.168.77.1"),),
        domain="lan.test",
        search=("lan.test",),
        mtu=1500,
        routes=((IPv4Network("10.0.0.0/8"), IPv4Address("192.168.77.2")),),
        lease_time=600.0,
        t1=300.0,
        t2=525.0,
        bound_at=1000.0,
        renew_at=1300.0,
        rebind_at=1525.0,
        expires_at=1600.0,
        state="BOUND",
        netns_path="/run/netns/pod",
        netns_inode=4026532000,
        ifname="eth0",
        mac="0a:58:c0:a8:4d:96",
        client_id=b"\x00k8s:default/web-0/lan/eth0",
        hostname="web-0",
        meta={"podNamespace": "default", "podName": "web-0"},
        extra_request=(42,),
        provide=((60, b"vendor"),),
        options={53: b"\x05", 51: b"\x00\x00\x02\x58"},
    )
    fields.update(kw)
    return Lease(**fields)  # type: ignore[arg-type]


def test_record_round_trip() -> None:
    lease = sample_lease()
    assert from_record(to_record(lease)) == lease
    flagged = sample_lease(broadcast_flag=True)
    assert from_record(to_record(flagged)) == flagged
    assert from_record(
        to_record(sample_lease(router=None, mtu=None, domain=None, hostname=None, server_mac=None))
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"version": 99},
        {"address": "not-an-address"},
        {"expires_at": "soon"},
        {"netns_inode": True},
        {"client_id": "zz"},
        {"routes": [["10.0.0.0/8"]]},
        {"mtu": "1500"},
    ],
)
def test_bad_records_are_rejected(broken: dict[str, object]) -> None:
    record = to_record(sample_lease())
    record.update(broken)
    with pytest.raises((ValueError, KeyError, TypeError)):
        from_record(record)


def test_missing_field_is_rejected() -> None:
    record = to_record(sample_lease())
    del record["server_id"]
    with pytest.raises(KeyError):
        from_record(record)


def test_client_id_is_stable_per_pod_and_distinct_per_attachment() -> None:
    a = client_id_for("default", "web-0", "sandbox-1", "lan", "eth0")
    assert a[0] == 0  # type 0: not a hardware address
    assert a == client_id_for("default", "web-0", "sandbox-2", "lan", "eth0")  # new sandbox
    assert a != client_id_for("default", "web-1", "sandbox-1", "lan", "eth0")
    assert a != client_id_for("other", "web-0", "sandbox-1", "lan", "eth0")
    assert a != client_id_for("default", "web-0", "sandbox-1", "lan", "net1")
    assert a != client_id_for("default", "web-0", "sandbox-1", "lan2", "eth0")
    # without Kubernetes identity the container id is all we have
    b = client_id_for(None, None, "sandbox-1", "lan", "eth0")
    assert b != client_id_for(None, None, "sandbox-2", "lan", "eth0")
    assert b == client_id_for("", "web-0", "sandbox-1", "lan", "eth0")
    long = client_id_for("ns" * 40, "pod" * 80, "c", "lan", "eth0")
    assert len(long) < 100 and long == client_id_for("ns" * 40, "pod" * 80, "x", "lan", "eth0")


def test_per_sandbox_identity_is_distinct_per_sandbox() -> None:
    usual = client_id_for("default", "web-0", "sandbox-1", "lan", "eth0")
    one = client_id_for("default", "web-0", "sandbox-1", "lan", "eth0", per_sandbox=True)
    two = client_id_for("default", "web-0", "sandbox-2", "lan", "eth0", per_sandbox=True)
    assert len({usual, one, two}) == 3
    assert one == b"\x00k8s:default/web-0/lan/eth0@sandbox-1"
    long_cid = "f" * 64  # a real container id: still unique, hashed past 128 bytes
    a = client_id_for("ns" * 20, "pod" * 10, long_cid, "lan", "eth0", per_sandbox=True)
    b = client_id_for("ns" * 20, "pod" * 10, "e" * 64, "lan", "eth0", per_sandbox=True)
    assert a != b and a.startswith(b"\x00sha256:")
    # without Kubernetes identity the container id is already in it
    assert client_id_for(None, None, "c", "lan", "eth0", per_sandbox=True) == client_id_for(
        None, None, "c", "lan", "eth0"
    )
    mac = stable_mac_for("default", "web-0", "sandbox-1", "lan", "eth0")
    mac1 = stable_mac_for("default", "web-0", "sandbox-1", "lan", "eth0", per_sandbox=True)
    mac2 = stable_mac_for("default", "web-0", "sandbox-2", "lan", "eth0", per_sandbox=True)
    assert len({mac, mac1, mac2}) == 3


def test_stable_mac_is_local_unicast_and_stable() -> None:
    mac = stable_mac_for("default", "web-0", "sandbox-1", "lan", "eth0")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    assert mac == stable_mac_for("default", "web-0", "sandbox-9", "lan", "eth0")
    assert mac != stable_mac_for("default", "web-1", "sandbox-1", "lan", "eth0")
    assert codec.mac_bytes(mac)


# -- issue 12 item 5c: option 15/119 text reaches resolv.conf -------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"lan.test\nnameserver 203.0.113.66",
        b"lan.test\r",
        b"lan test",
        b"lan.test\tx",
        b"l\x00an.test",
        b"lan.t\xc3\xa9st",
        b"lan..test",
        b"-lan.test",
        b"a" * 64 + b".test",
        b"x." * 127 + b"x",
    ],
)
def test_invalid_domain_option_is_dropped_with_a_warning(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING")
    info = ack_info(_ack(DOMAIN=raw), SERVER)
    assert info.domain is None
    assert "option 15" in caplog.text


def test_invalid_search_names_are_dropped_and_valid_ones_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def name(*labels: bytes) -> bytes:
        return b"".join(bytes((len(label),)) + label for label in labels) + b"\0"

    raw = (
        name(b"good", b"test")
        + name(b"evil\nnameserver 203", b"0", b"113", b"66")
        + name(b"sp ace", b"test")
        + name(b"under_score", b"test")
        + name(b"x1", b"corp", b"test")
    )
    caplog.set_level("WARNING")
    info = ack_info(_ack(DOMAIN_SEARCH=raw, DOMAIN=b"lan.test."), SERVER)
    assert info.search == ("good.test", "under_score.test", "x1.corp.test")
    assert info.domain == "lan.test"
    assert "option 119" in caplog.text and "nameserver" in caplog.text
