"""The per-identity address memory behind "a re-created pod gets the same address"."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.state import addressbook
from cni_bridge_dhcp.agent.state.addressbook import AddressBook


def test_remembers_across_agent_restarts(tmp_path: Path) -> None:
    book = AddressBook(tmp_path)
    assert book.get(b"\x00k8s:a/b") is None
    book.remember(b"\x00k8s:a/b", IPv4Address("192.168.77.120"))
    assert AddressBook(tmp_path).get(b"\x00k8s:a/b") == IPv4Address("192.168.77.120")
    book.remember(b"\x00k8s:a/b", IPv4Address("192.168.77.121"))
    assert AddressBook(tmp_path).get(b"\x00k8s:a/b") == IPv4Address("192.168.77.121")


def test_is_bounded_dropping_the_oldest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addressbook, "MAX_ENTRIES", 3)
    book = AddressBook(tmp_path)
    for i in range(5):
        book.remember(bytes([i]), IPv4Address(f"10.0.0.{i}"))
    assert [book.get(bytes([i])) for i in range(5)][:2] == [None, None]
    assert AddressBook(tmp_path).get(bytes([4])) == IPv4Address("10.0.0.4")


def test_corrupt_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "addressbook.json").write_text("{torn")
    assert AddressBook(tmp_path).get(b"x") is None


def test_a_full_book_takes_a_new_identity_without_rewriting_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each change is one appended line; the whole book (300 KiB at 4,096 identities) is
    written only when the log is as long as the book."""
    monkeypatch.setattr(addressbook, "MAX_ENTRIES", 8)
    book = AddressBook(tmp_path)
    for i in range(8):  # the 8th change folds the log into the file
        book.remember(bytes([i]), IPv4Address(f"10.0.0.{i}"))
    assert book.log_path.exists() is False
    written = book.path.stat()
    book.remember(bytes([100]), IPv4Address("10.0.1.100"))
    assert book.path.stat().st_ino == written.st_ino and book.path.stat().st_size == written.st_size
    assert len(book.log_path.read_bytes().splitlines()) == 1
    again = AddressBook(tmp_path)
    assert again.get(bytes([100])) == IPv4Address("10.0.1.100")
    assert again.get(bytes([0])) is None  # the oldest made room
    assert again.get(bytes([7])) == IPv4Address("10.0.0.7")


def test_a_torn_last_line_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    book = AddressBook(tmp_path)
    book.remember(b"a", IPv4Address("10.0.0.1"))
    book.remember(b"b", IPv4Address("10.0.0.2"))
    with book.log_path.open("ab") as fh:
        fh.write(b'["63","10.0.0.3",17')  # a crash mid-append
    again = AddressBook(tmp_path)
    assert again.get(b"a") == IPv4Address("10.0.0.1")
    assert again.get(b"b") == IPv4Address("10.0.0.2")
    assert again.get(b"c") is None
    # The next change is not glued onto the torn line.
    again.remember(b"d", IPv4Address("10.0.0.4"))
    assert AddressBook(tmp_path).get(b"d") == IPv4Address("10.0.0.4")


def test_a_crash_between_writing_the_book_and_emptying_the_log_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(addressbook, "MAX_ENTRIES", 4)
    book = AddressBook(tmp_path)
    for i in range(3):
        book.remember(bytes([i]), IPv4Address(f"10.0.0.{i}"))
    log_before = book.log_path.read_bytes()
    book.remember(bytes([3]), IPv4Address("10.0.0.3"))  # folds
    book.log_path.write_bytes(log_before)  # as if the log had not been removed
    again = AddressBook(tmp_path)
    assert [again.get(bytes([i])) for i in range(4)] == [
        IPv4Address(f"10.0.0.{i}") for i in range(4)
    ]


def test_a_changed_address_moves_the_identity_to_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(addressbook, "MAX_ENTRIES", 3)
    book = AddressBook(tmp_path)
    for i in range(3):
        book.remember(bytes([i]), IPv4Address(f"10.0.0.{i}"))
    book.remember(bytes([0]), IPv4Address("10.0.0.50"))  # 0 is now the newest
    book.remember(bytes([9]), IPv4Address("10.0.0.9"))  # evicts 1, the oldest
    for b in (book, AddressBook(tmp_path)):
        assert b.get(bytes([0])) == IPv4Address("10.0.0.50")
        assert b.get(bytes([1])) is None
        assert b.get(bytes([9])) == IPv4Address("10.0.0.9")
