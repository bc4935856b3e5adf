"""Lease journal: atomic durable writes, torn and corrupt files survive a restart."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from tests.unit.test_dhcp_lease import sample_lease


def test_write_load_remove(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    a, b = sample_lease(), sample_lease(key="lan/other/eth0")
    journal.write(a)
    journal.write(b)
    assert sorted(lease.key for lease in journal.load()) == sorted([a.key, b.key])
    assert (journal.dir.stat().st_mode & 0o777) == 0o700
    assert journal.remove(a.key) is True
    assert journal.remove(a.key) is False
    assert [lease.key for lease in journal.load()] == [b.key]


def test_rewrite_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(sample_lease())
    inode_before = journal.path_for(sample_lease().key).stat().st_ino
    journal.write(sample_lease(state="RENEWING", expires_at=5000.0))
    path = journal.path_for(sample_lease().key)
    assert path.stat().st_ino != inode_before  # a new file renamed over the old one
    assert os.listdir(journal.dir) == [path.name]
    (loaded,) = journal.load()
    assert loaded.expires_at == 5000.0 and loaded.state == "RENEWING"


def test_failed_rename_keeps_the_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.write(sample_lease())

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CNIError) as err:
        journal.write(sample_lease(expires_at=9999.0))
    assert err.value.code == ErrorCode.STATE_FAILED
    assert "No space left on device" in err.value.msg
    monkeypatch.undo()
    (loaded,) = journal.load()
    assert loaded.expires_at == sample_lease().expires_at
    assert os.listdir(journal.dir) == [journal.path_for(loaded.key).name]


# What a crash or a hand edit leaves of a record (test_v4v6_shared runs them on both journals).
DAMAGE = [
    pytest.param(lambda body: body[: len(body) // 2], id="torn"),
    pytest.param(lambda body: b"", id="empty"),  # allocated but never written
    pytest.param(lambda body: b"\0" * len(body), id="zeros"),  # zero-filled blocks
    pytest.param(lambda body: b"[1, 2]", id="not-an-object"),
    pytest.param(lambda body: body.replace(b'"address"', b'"adress"'), id="missing-field"),
]


@pytest.mark.parametrize("damage", DAMAGE)
def test_corrupt_record_is_logged_moved_aside_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    journal = Journal(tmp_path)
    good, bad = sample_lease(key="lan/good/eth0"), sample_lease(key="lan/bad/eth0")
    journal.write(good)
    journal.write(bad)
    path = journal.path_for(bad.key)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with caplog.at_level(logging.ERROR):
        loaded = journal.load()
    assert [lease.key for lease in loaded] == [good.key]
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert path.with_name(path.name + ".corrupt").exists() and not path.exists()
    assert [lease.key for lease in journal.load()] == [good.key]  # quiet the second time


def test_record_under_the_wrong_name_is_rejected(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(sample_lease())
    record = json.loads(journal.path_for(sample_lease().key).read_text())
    record["key"] = "lan/someone-else/eth0"
    journal.path_for(sample_lease().key).write_text(json.dumps(record))
    assert journal.load() == []


def test_interrupted_write_leftovers_are_removed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(sample_lease())
    leftover = journal.dir / ".deadbeef.123.0.tmp"
    leftover.write_bytes(b'{"half')
    assert len(journal.load()) == 1
    assert not leftover.exists()


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    assert Journal(tmp_path / "nope").load() == []


# A record as the journal wrote it before Lease derived its ACK fields from AckInfo and
# states became LeaseState (issue 14): byte for byte, so any drift of the on-disk form shows.
_RECORD_V1 = """\
{
 "address": "192.168.77.150/24",
 "arp_probe_wait": 0.25,
 "bound_at": 1000.0,
 "broadcast_flag": true,
 "client_id": "006b38733a64656661756c742f7765622d302f6c616e2f65746830",
 "client_id_mode": "mac",
 "dns_servers": [
  "192.168.77.1"
 ],
 "domain": "lan.test",
 "expires_at": 1600.0,
 "extra_request": [
  42
 ],
 "hostname": "web-0",
 "ifname": "eth0",
 "key": "lan/abc123/eth0",
 "lease_time": 600.0,
 "mac": "0a:58:c0:a8:4d:96",
 "meta": {
  "podName": "web-0",
  "podNamespace": "default"
 },
 "mtu": 1500,
 "netns_inode": 4026532000,
 "netns_path": "/run/netns/pod",
 "options": {
  "51": "00000258",
  "53": "05"
 },
 "provide": [
  [
   60,
   "76656e646f72"
  ]
 ],
 "rebind_at": 1525.0,
 "renew_at": 1300.0,
 "router": "192.168.77.1",
 "routes": [
  [
   "10.0.0.0/8",
   "192.168.77.2"
  ]
 ],
 "search": [
  "lan.test"
 ],
 "server_allow_list": [
  "192.168.77.1"
 ],
 "server_id": "192.168.77.1",
 "server_mac": "02:00:00:00:00:01",
 "server_macs": [
  [
   "192.168.77.1",
   "02:00:00:00:00:01"
  ]
 ],
 "state": "REBINDING",
 "t1": 300.0,
 "t2": 525.0,
 "version": 1
}
"""


def test_a_written_record_loads_and_rewrites_byte_for_byte(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.dir.mkdir(mode=0o700)
    path = journal.path_for("lan/abc123/eth0")
    path.write_text(_RECORD_V1)
    (lease,) = journal.load()
    assert lease.state == "REBINDING" and lease.client_id_mode == "mac"
    path.unlink()
    journal.write(lease)
    # Same record; written compact now (an older agent indented it), and stable from there.
    assert json.loads(path.read_text()) == json.loads(_RECORD_V1)
    written = path.read_text()
    (again,) = journal.load()
    path.unlink()
    journal.write(again)
    assert path.read_text() == written
