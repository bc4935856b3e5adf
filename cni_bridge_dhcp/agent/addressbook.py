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

from ..errors import CNIError
from . import statefile

log = logging.getLogger(__name__)

MAX_ENTRIES = 4096


class AddressBook:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "addressbook.json"
        self._lock = threading.Lock()
        data = statefile.read_json(self.path) or {}
        self._entries: dict[str, tuple[str, float]] = {
            k: (str(v[0]), float(v[1]))
            for k, v in data.get("entries", {}).items()
            if isinstance(v, list) and len(v) == 2
        }

    def get(self, client_id: bytes) -> ipaddress.IPv4Address | None:
        with self._lock:
            entry = self._entries.get(client_id.hex())
        if entry is None:
            return None
        try:
            return ipaddress.IPv4Address(entry[0])
        except ValueError:
            return None

    def remember(self, client_id: bytes, address: ipaddress.IPv4Address) -> None:
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
                log.warning("address book not saved: %s", exc.msg)
