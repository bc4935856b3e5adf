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
