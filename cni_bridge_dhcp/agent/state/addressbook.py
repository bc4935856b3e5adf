"""The last address each pod identity held, so a re-created pod asks for it again.

A released lease is forgotten by many servers (dnsmasq deletes it), and a new sandbox
usually has a new MAC; without a hint the pod would get another address. The hint is
DHCP option 50 in the DISCOVER: the server may still refuse it when the address is taken.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from ...cni.defaults import ADDRESS_BOOK
from ...cni.errors import CNIError
from . import statefile
from .statefile import ShapeError

log = logging.getLogger(__name__)

MAX_ENTRIES = 4096


A = TypeVar("A", ipaddress.IPv4Address, ipaddress.IPv6Address)


class HintBook(Generic[A]):
    """``{"entries": {<client id hex>: [<address>, <unix time>]}}`` in ``<state_dir>/<filename>``,
    at most MAX_ENTRIES (the oldest go); ``label`` names it in logs. The DHCPv4 address
    book (client id, option 50) and the DHCPv6 one (dhcp/v6/hints.py: DUID, IA_NA hint)."""

    def __init__(self, state_dir: Path, filename: str, family: type[A], label: str) -> None:
        self.path = Path(state_dir) / filename
        self.family: type[A] = family
        self.label = label
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}
        data = statefile.read_json(self.path, aside=True) or {}
        try:
            self._entries = parse_entries(data, family)
        except ShapeError as exc:
            # Only hints: start empty rather than refuse to start.
            statefile.set_aside(self.path, f"{label}: {exc}")

    def get(self, client_id: bytes) -> A | None:
        with self._lock:
            entry = self._entries.get(client_id.hex())
        if entry is None:
            return None
        try:
            return self.family(entry[0])
        except ValueError:
            return None

    def remember(self, client_id: bytes, address: A) -> None:
        with self._lock:
            key = client_id.hex()
            if self._entries.get(key, ("",))[0] == str(address):
                return
            self._entries[key] = (str(address), time.time())
            if len(self._entries) > MAX_ENTRIES:
                oldest = sorted(self._entries.items(), key=lambda kv: kv[1][1])
                for k, _ in oldest[: len(self._entries) - MAX_ENTRIES]:
                    del self._entries[k]
            # Written under the lock so the file never goes back to an older snapshot.
            try:
                statefile.write_json(
                    self.path, {"entries": {k: list(v) for k, v in self._entries.items()}}
                )
            except CNIError as exc:
                # Only a hint for the next pod of this identity: an ADD must not fail (and
                # leave its fresh lease behind) because the state dir is full or read-only.
                log.warning("%s not saved: %s", self.label, exc.msg)


class AddressBook(HintBook[ipaddress.IPv4Address]):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, ADDRESS_BOOK, ipaddress.IPv4Address, "address book")


def parse_entries(
    data: dict[str, Any],
    family: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = ipaddress.IPv4Address,
) -> dict[str, tuple[str, float]]:
    """``{"entries": {<client id hex>: [<address>, <unix time>]}}``, checked entry by entry."""
    raw = data.get("entries", {})
    if not isinstance(raw, dict):
        raise ShapeError("entries", "is not an object")
    entries: dict[str, tuple[str, float]] = {}
    for key, value in raw.items():
        field = f"entries[{key!r}]"
        try:
            bytes.fromhex(key)
        except ValueError:
            raise ShapeError(field, "is not keyed by a hex client id") from None
        if not isinstance(value, list) or len(value) != 2:
            raise ShapeError(field, "is not an [address, time] pair")
        address, when = value
        try:
            if not isinstance(address, str):
                raise ValueError
            family(address)
        except ValueError:
            kind = family.__name__.removesuffix("Address")
            raise ShapeError(f"{field}[0]", f"{address!r} is not an {kind} address") from None
        if isinstance(when, bool) or not isinstance(when, int | float):
            raise ShapeError(f"{field}[1]", f"{when!r} is not a time")
        entries[key] = (address, float(when))
    return entries
