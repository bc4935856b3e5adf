"""State files of valid JSON but the wrong shape, and state files the agent cannot trust.

Each loader validates field by field: a bad record is set aside as ``*.corrupt`` with a
log line naming the file and the field, and the good records next to it still load. A
file that another user owns or could have written is skipped with a warning; a state dir
that others can write to is refused with the fix in the message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent.dhcp.journal import Journal
from cni_bridge_dhcp.agent.state import statefile
from cni_bridge_dhcp.agent.state.addressbook import AddressBook
from cni_bridge_dhcp.agent.state.attachments import Attachment, AttachmentStore
from cni_bridge_dhcp.agent.uplink import journal as uj
from cni_bridge_dhcp.cni.errors import CNIError
from tests.unit.test_dhcp_lease import sample_lease
from tests.unit.test_uplink_journal import snapshot

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def _att(cid: str) -> Attachment:
    return Attachment("lan", cid, "eth0", f"/run/netns/{cid}", 7, "cni0", "veth0", "ready",
                      ips=["192.168.77.50/24"])  # fmt: skip


def _store_with(tmp_path: Path, **bad: Any) -> tuple[AttachmentStore, Path]:
    """A store holding a good record "good" and record "bad" with ``bad`` merged in."""
    store = AttachmentStore(tmp_path)
    store.put(_att("good"))
    store.put(_att("bad"))
    path = Path(store._path(_att("bad").key))
    data = json.loads(path.read_text())
    data.update(bad)
    path.write_text(json.dumps(data))
    return store, path


BAD_ATTACHMENTS: list[tuple[dict[str, Any], str]] = [
    ({"ips": ["not-an-address"]}, "ips[0]"),
    ({"ips": "192.168.77.5/24"}, "ips"),
    ({"ips": [5]}, "ips[0]"),
    ({"netns_inode": "7"}, "netns_inode"),
    ({"bridge": None}, "bridge"),
    ({"state": "done"}, "state"),
    ({"result": []}, "result"),
    ({"result": {"fw": "iptables"}}, "result.fw"),
    ({"result": {"delegate": {"conf": {}, "cniPath": ["/tmp"]}}}, "result.delegate.cniPath"),
    ({"container_id": "other"}, "file name"),
    ({"uplink": 1}, "uplink"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_ATTACHMENTS)
def test_attachment_of_wrong_shape_is_set_aside_naming_the_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: dict[str, Any], field: str
) -> None:
    store, path = _store_with(tmp_path, **bad)
    with caplog.at_level(logging.ERROR):
        loaded = store.all()
    assert [a.container_id for a in loaded] == ["good"]
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    assert str(path) in caplog.text and field in caplog.text
    # the firewall upkeep derives rules from every loaded record: none of them raises
    for att in loaded:
        assert att.ips == ["192.168.77.50/24"]


def test_attachment_get_of_a_bad_record_is_none(tmp_path: Path) -> None:
    store, path = _store_with(tmp_path, ips=["not-an-address"])
    assert store.get(_att("bad").key) is None
    assert path.with_name(path.name + ".corrupt").exists()
    assert store.get(_att("good").key) is not None


@pytest.mark.parametrize("raw", [b'{"version": 1', b"[1, 2]", b"null"])
def test_torn_or_non_object_attachment_is_set_aside(tmp_path: Path, raw: bytes) -> None:
    store, path = _store_with(tmp_path)
    path.write_bytes(raw)
    assert [a.container_id for a in store.all()] == ["good"]
    assert path.with_name(path.name + ".corrupt").read_bytes() == raw


@pytest.mark.parametrize(
    ("book", "field"),
    [
        ({"entries": []}, "entries"),
        ({"entries": {"zz": ["192.168.77.5", 1.0]}}, "hex client id"),
        ({"entries": {"01ab": ["not-an-address", 1.0]}}, "not-an-address"),
        ({"entries": {"01ab": ["192.168.77.5"]}}, "01ab"),
        ({"entries": {"01ab": ["192.168.77.5", "yesterday"]}}, "yesterday"),
    ],
)
def test_addressbook_of_wrong_shape_starts_empty_and_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, book: dict[str, Any], field: str
) -> None:
    path = tmp_path / "addressbook.json"
    path.write_text(json.dumps(book))
    with caplog.at_level(logging.ERROR):
        ab = AddressBook(tmp_path)
    assert ab.get(bytes.fromhex("01ab")) is None
    assert path.with_name("addressbook.json.corrupt").exists()
    assert str(path) in caplog.text and field in caplog.text


def test_addressbook_good_entries_load(tmp_path: Path) -> None:
    (tmp_path / "addressbook.json").write_text(
        json.dumps({"entries": {"01ab": ["192.168.77.5", 1.0]}})
    )
    assert str(AddressBook(tmp_path).get(bytes.fromhex("01ab"))) == "192.168.77.5"


@pytest.mark.parametrize(
    ("bad", "field"),
    [({"address": "not-an-address"}, "not-an-address"), ({"meta": []}, "meta"),
     ({"options": {"12": 5}}, "fromhex"), ({"routes": [[1]]}, "unpack")],
)  # fmt: skip
def test_lease_record_of_wrong_shape_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: dict[str, Any], field: str
) -> None:
    journal = Journal(tmp_path)
    good = sample_lease(key="lan/good/eth0")
    journal.write(good)
    journal.write(dataclasses.replace(good, key="lan/bad/eth0"))
    path = journal.path_for("lan/bad/eth0")
    path.write_text(json.dumps({**json.loads(path.read_text()), **bad}))
    with caplog.at_level(logging.ERROR):
        assert [x.key for x in journal.load()] == ["lan/good/eth0"]
    assert path.with_name(path.name + ".corrupt").exists()
    assert str(path) in caplog.text and field in caplog.text


def _journal_dict() -> dict[str, Any]:
    return uj.Journal("cni0", "eth0", "eth0", uj.DONE, snapshot(), state={}).to_dict()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"snapshot": []}, "snapshot"),
        ({"steps": "bridge"}, "steps"),
        ({"phase": 3}, "phase"),
        ({"netns": "x"}, "netns"),
        ({"state": ["x"]}, "state"),
        ({"snapshot": {**snapshot().to_dict(), "mtu": "1500"}}, "snapshot.mtu"),
        ({"snapshot": {**snapshot().to_dict(), "addresses": [{"family": 2}]}},
         "snapshot.addresses[0]"),
        ({"snapshot": {**snapshot().to_dict(), "routes": [{"family": 2, "dst": 5}]}},
         "snapshot.routes[0].dst"),
    ],
)  # fmt: skip
def test_uplink_journal_of_wrong_shape_is_kept_and_never_acted_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any], field: str
) -> None:
    path = uj.journal_path(tmp_path)
    body = json.dumps({**_journal_dict(), **change})
    path.write_text(body)
    with caplog.at_level(logging.ERROR):
        assert uj.load(tmp_path) is None  # start-up recovery and status: nothing to act on
    assert "UPLINK JOURNAL" in caplog.text and field in caplog.text and str(path) in caplog.text
    with pytest.raises(CNIError) as err:  # a takeover or a restore: refused, naming it
        uj.load(tmp_path, strict=True)
    assert err.value.code == 102 and str(path) in err.value.msg and field in err.value.msg
    assert path.read_text() == body  # kept in place, untouched, for restore/doctor


def test_good_uplink_journal_loads_strictly(tmp_path: Path) -> None:
    uj.save(tmp_path, uj.Journal("cni0", "eth0", "eth0", uj.DONE, snapshot(), state={}))
    journal = uj.load(tmp_path, strict=True)
    assert journal is not None and journal.snapshot == snapshot()


# ---------------------------------------------------------------- ownership and modes


def test_state_dir_writable_by_others_is_refused_naming_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    statefile.check_state_dir(state)
    os.chmod(state, 0o777)
    with pytest.raises(statefile.StateDirError) as err:
        statefile.check_state_dir(state)
    assert str(state) in str(err.value) and f"chmod 0700 {state}" in str(err.value)
    os.chmod(state, 0o700)
    sub = state / "attachments"
    sub.mkdir(mode=0o700)
    os.chmod(sub, 0o770)
    with pytest.raises(statefile.StateDirError) as err:
        statefile.check_state_dir(state)
    assert str(sub) in str(err.value)


@needs_root
def test_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    with pytest.raises(statefile.StateDirError) as err:
        statefile.check_state_dir(state)
    assert "uid 65534" in str(err.value) and f"chown 0: {state}" in str(err.value)


@needs_root
def test_records_of_another_user_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, path = _store_with(tmp_path)
    os.chown(path, 65534, 65534)
    book = tmp_path / "addressbook.json"
    book.write_text(json.dumps({"entries": {"01ab": ["192.168.77.5", 1.0]}}))
    os.chown(book, 65534, 65534)
    with caplog.at_level(logging.WARNING):
        assert [a.container_id for a in store.all()] == ["good"]
        assert AddressBook(tmp_path).get(bytes.fromhex("01ab")) is None
    assert path.exists() and book.exists()  # skipped, not ours to move
    assert f"skipping state file {path}: owned by uid 65534" in caplog.text
    assert f"skipping state file {book}" in caplog.text


def test_group_writable_or_symlinked_records_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, path = _store_with(tmp_path)
    os.chmod(path, 0o666)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(_att("link").to_json()))
    link = Path(store._path(_att("link").key))
    link.symlink_to(planted)
    with caplog.at_level(logging.WARNING):
        assert [a.container_id for a in store.all()] == ["good"]
    assert "writable by group or others" in caplog.text
    assert f"skipping state file {link}: it is a symlink" in caplog.text
    journal = Journal(tmp_path)
    journal.write(sample_lease(key="lan/x/eth0"))
    os.chmod(journal.path_for("lan/x/eth0"), 0o646)
    assert journal.load() == []
