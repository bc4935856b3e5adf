"""The DHCPv4 and DHCPv6 clients share their journal, address book and identity code:
each test here runs the same expectation against both families, so the two cannot drift
apart again (the DHCPv6 client began as a copy of the v4 code, with its own variants of the
corrupt-record handling)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Protocol

import pytest

from cni_bridge_dhcp.agent.dhcp.identity import client_id_for, stable_mac_for
from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.agent.dhcp.transport import Gone, PodTransportFactory, Target
from cni_bridge_dhcp.agent.dhcp.v6 import transport as transport6
from cni_bridge_dhcp.agent.dhcp.v6.hints import AddressHints6
from cni_bridge_dhcp.agent.dhcp.v6.identity import duid_ll, iaid_for
from cni_bridge_dhcp.agent.dhcp.v6.lease import Journal6
from cni_bridge_dhcp.agent.dhcp.v6.transport import Target6
from cni_bridge_dhcp.agent.state.addressbook import AddressBook
from cni_bridge_dhcp.cni.defaults import ADDRESS_BOOK, ADDRESS_BOOK6
from tests.unit.test_dhcp_journal import DAMAGE
from tests.unit.test_dhcp_lease import sample_lease
from tests.unit.test_dhcpv6 import _lease as sample_lease6

# -- the lease journals --------------------------------------------------------------------


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


class _AnyJournal(Protocol):
    dir: Path

    def path_for(self, key: str) -> Path: ...
    def write(self, lease: _Keyed) -> None: ...
    def load(self) -> list[_Keyed]: ...


@dataclass(frozen=True)
class _Family:
    name: str
    journal: Callable[[Path], _AnyJournal]
    lease: Callable[[str], _Keyed]


def _v4_lease(key: str) -> _Keyed:
    return sample_lease(key=key)


def _v6_lease(key: str) -> _Keyed:
    import dataclasses

    return dataclasses.replace(sample_lease6(), key=key)


FAMILIES = [
    _Family("v4", Journal, _v4_lease),  # type: ignore[arg-type]
    _Family("v6", Journal6, _v6_lease),  # type: ignore[arg-type]
]


@pytest.fixture(params=FAMILIES, ids=lambda f: f.name)
def family(request: pytest.FixtureRequest) -> _Family:
    fam: _Family = request.param
    return fam


@pytest.mark.parametrize(
    "damage",
    [
        *DAMAGE,
        pytest.param(
            lambda body: json.dumps({**json.loads(body), "state": "LOST"}).encode(), id="bad-value"
        ),
    ],
)
def test_corrupt_record_is_logged_with_where_it_went_and_moved_aside(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    family: _Family,
    damage: Callable[[bytes], bytes],
) -> None:
    journal = family.journal(tmp_path)
    good, bad = family.lease("lan/good/eth0"), family.lease("lan/bad/eth0")
    journal.write(good)
    journal.write(bad)
    path = journal.path_for(bad.key)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.ERROR):
        loaded = journal.load()
    assert [lease.key for lease in loaded] == [good.key]
    aside = path.with_name(path.name + ".corrupt")
    assert "ignoring corrupt record" in caplog.text
    assert str(path) in caplog.text and str(aside) in caplog.text
    assert aside.exists() and not path.exists()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert [lease.key for lease in journal.load()] == [good.key]
    assert caplog.text == ""  # quiet the second time


def test_a_corrupt_record_that_cannot_be_moved_aside_is_logged(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    family: _Family,
) -> None:
    journal = family.journal(tmp_path)
    lease = family.lease("lan/bad/eth0")
    journal.write(lease)
    path = journal.path_for(lease.key)
    path.write_bytes(b"{")

    def refuse(src: object, dst: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with caplog.at_level(logging.ERROR):
        assert journal.load() == []
    assert f"cannot move {path} aside" in caplog.text and "Read-only file system" in caplog.text
    assert path.exists()


def test_records_are_one_file_per_key_with_the_same_naming(tmp_path: Path, family: _Family) -> None:
    journal = family.journal(tmp_path)
    lease = family.lease("lan/a/eth0")
    journal.write(lease)
    path = journal.path_for(lease.key)
    assert path.parent == journal.dir and len(path.stem) == 40 and path.suffix == ".json"
    assert os.listdir(journal.dir) == [path.name]
    assert json.loads(path.read_text())["key"] == lease.key


# -- the address books ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("book", "file", "address"),
    [
        (AddressBook, ADDRESS_BOOK, IPv4Address("192.168.77.150")),
        (AddressHints6, ADDRESS_BOOK6, IPv6Address("fd77:77::1000")),
    ],
    ids=["v4", "v6"],
)
@pytest.mark.parametrize(
    "entries",
    [
        {"00aa": ["not an address", 1.0]},
        {"00aa": ["192.168.77.9", "yesterday"]},
        {"not hex": ["fd77:77::9", 1.0]},
        {"00aa": "fd77:77::9"},
        ["00aa"],
    ],
    ids=["bad-address", "bad-time", "bad-key", "not-a-pair", "not-an-object"],
)
def test_a_malformed_address_book_is_set_aside_and_starts_empty(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    book: Callable[[Path], AddressBook],
    file: str,
    address: IPv4Address | IPv6Address,
    entries: object,
) -> None:
    path = tmp_path / file
    path.write_text(json.dumps({"entries": entries}))
    with caplog.at_level(logging.ERROR):
        loaded = book(tmp_path)
    assert path.with_name(path.name + ".corrupt").exists() and not path.exists()
    assert str(path) in caplog.text
    assert loaded.get(bytes.fromhex("00aa")) is None
    loaded.remember(b"\x01", address)  # type: ignore[arg-type]
    assert book(tmp_path).get(b"\x01") == address


# -- identities ----------------------------------------------------------------------------

POD = ("default", "web-0", "c1", "lan", "eth0")


def test_identities_stay_what_servers_have_on_record() -> None:
    # What DHCP servers hold leases and reservations under: must never drift.
    assert client_id_for(*POD) == b"\x00k8s:default/web-0/lan/eth0"
    assert client_id_for(*POD, per_sandbox=True) == b"\x00k8s:default/web-0/lan/eth0@c1"
    assert client_id_for(None, None, "c1", "lan", "eth0") == b"\x00cni:c1/lan/eth0"
    assert stable_mac_for(*POD) == "9e:b2:16:e4:a7:d8"
    assert stable_mac_for(*POD, per_sandbox=True) == "da:a0:85:09:6b:5f"
    # DUID-LL of the stable MAC, and the IAID from the DUID
    assert duid_ll(stable_mac_for(*POD)) == bytes.fromhex("000300019eb216e4a7d8")
    assert duid_ll(stable_mac_for(*POD, per_sandbox=True)) == bytes.fromhex("00030001daa085096b5f")
    assert iaid_for(duid_ll(stable_mac_for(*POD))) == 885928814


# -- the pod sockets' namespace ------------------------------------------------------------


def _open_v4(path: str, fd: int | None, inode: int | None) -> object:
    target = Target(path, "eth0", "02:00:00:00:00:01", netns_fd=fd, netns_inode=inode)
    return PodTransportFactory()._open_sync(target, False, None)


def _open_v6(path: str, fd: int | None, inode: int | None) -> object:
    return transport6._open_sync(Target6(path, "eth0", netns_fd=fd, netns_inode=inode))


@pytest.mark.parametrize("open_sync", [_open_v4, _open_v6], ids=["v4", "v6"])
def test_a_pod_namespace_gone_or_replaced_is_gone_for_both_families(
    tmp_path: Path, open_sync: Callable[[str, int | None, int | None], object]
) -> None:
    missing = str(tmp_path / "no-such-netns")
    with pytest.raises(Gone, match=f"netns {missing} is gone"):
        open_sync(missing, None, None)
    # a pinned fd (this process's own namespace) expected under another inode: the check
    # fails before anything runs in it
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(Gone, match="is a different namespace now"):
            open_sync("/var/run/netns/pod1", fd, os.fstat(fd).st_ino + 1)
    finally:
        os.close(fd)
    assert transport6.Gone is Gone  # one exception for both clients' callers
