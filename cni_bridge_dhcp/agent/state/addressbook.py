"""The last address each pod identity held, so a re-created pod asks for it again.

A released lease is forgotten by many servers (dnsmasq deletes it), and a new sandbox
usually has a new MAC; without a hint the pod would get another address. The hint is
DHCP option 50 in the DISCOVER: the server may still refuse it when the address is taken.
"""

from __future__ import annotations

import ipaddress
import json
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
    book (client id, option 50) and the DHCPv6 one (dhcp/v6/hints.py: DUID, IA_NA hint).

    A change is one line appended to ``<filename>.log`` (``[<hex>, <address>, <time>]``),
    folded into the file once the log holds MAX_ENTRIES lines. Rewriting the whole book on
    every ADD cost ~14 ms of CPU once it was full (4,096 identities, 300 KiB of JSON): a
    node that has run a few thousand pods paid it on each new one."""

    def __init__(self, state_dir: Path, filename: str, family: type[A], label: str) -> None:
        self.path = Path(state_dir) / filename
        self.log_path = self.path.with_name(filename + ".log")
        self.family: type[A] = family
        self.label = label
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}  # oldest first
        self._logged = 0  # lines in the log
        data = statefile.read_json(self.path, aside=True) or {}
        try:
            entries = parse_entries(data, family)
        except ShapeError as exc:
            # Only hints: start empty rather than refuse to start.
            statefile.set_aside(self.path, f"{label}: {exc}")
            entries = {}
        for key, stored in sorted(entries.items(), key=lambda kv: kv[1][1]):
            self._entries[key] = stored
        self._replay_log()
        self._trim()

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
            hint: tuple[str, float] = (str(address), round(time.time(), 3))
            self._put(key, hint)
            self._trim()
            # Under the lock, so the log's order is the order of the changes.
            try:
                if self._logged + 1 >= MAX_ENTRIES:
                    self._fold()
                else:
                    line = json.dumps([key, *hint], separators=(",", ":")) + "\n"
                    statefile.append_line(self.log_path, line.encode())
                    self._logged += 1
            except CNIError as exc:
                # Only a hint for the next pod of this identity: an ADD must not fail (and
                # leave its fresh lease behind) because the state dir is full or read-only.
                log.warning("%s not saved: %s", self.label, exc.msg)

    def _put(self, key: str, value: tuple[str, float]) -> None:
        self._entries.pop(key, None)  # to the end: the newest
        self._entries[key] = value

    def _trim(self) -> None:
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]

    def _fold(self) -> None:
        """Write the whole book, then empty the log (a crash in between replays the log
        over the new file: the same entries again)."""
        statefile.write_json(
            self.path,
            {"entries": {k: list(v) for k, v in self._entries.items()}},
            sort_keys=False,
        )
        statefile.remove(self.log_path)
        self._logged = 0

    def _replay_log(self) -> None:
        raw = statefile.read_trusted(self.log_path)
        if raw is None:
            return
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                key, address, when = json.loads(line)
                parsed = parse_entries({"entries": {key: [address, when]}}, self.family)
            except (ValueError, TypeError, ShapeError) as exc:
                # A torn last line is what a crash mid-append leaves: skip it, keep the rest.
                torn = number == len(lines) and not raw.endswith(b"\n")
                log.log(
                    logging.INFO if torn else logging.WARNING,
                    "%s: skipping line %d of %s: %s",
                    self.label, number, self.log_path, "torn" if torn else exc,
                )  # fmt: skip
                continue
            self._put(key, parsed[key])
            self._logged += 1
        if not raw.endswith(b"\n") and raw:
            # A line appended after a torn one would join it: start a clean log.
            try:
                self._fold()
            except CNIError as exc:
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
