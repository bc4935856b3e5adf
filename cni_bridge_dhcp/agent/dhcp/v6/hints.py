"""The last DHCPv6 address of each pod identity (DUID), asked for again (an IA_NA address
hint in SOLICIT) when the pod is re-created: servers that do not keep a released lease for
its client (Kea 2.2) would otherwise hand out the pool's next address. Only hints: a file
that does not load starts empty; one that cannot be written is logged, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from ipaddress import IPv6Address
from pathlib import Path

from ....cni.defaults import ADDRESS_BOOK6
from ....cni.errors import CNIError
from ...state import statefile

log = logging.getLogger(__name__)

MAX_ENTRIES = 4096


class AddressHints6:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / ADDRESS_BOOK6
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}
        try:
            data = statefile.read_json(self.path, aside=True) or {}
            raw = data.get("entries", {})
            for duid, value in raw.items() if isinstance(raw, dict) else ():
                if isinstance(value, list) and len(value) == 2:
                    IPv6Address(str(value[0]))
                    self._entries[str(duid)] = (str(value[0]), float(value[1]))
        except (CNIError, ValueError, TypeError) as exc:
            log.warning("DHCPv6 address hints not loaded: %s", exc)
            self._entries = {}

    def get(self, duid: bytes) -> IPv6Address | None:
        with self._lock:
            entry = self._entries.get(duid.hex())
        return IPv6Address(entry[0]) if entry else None

    def remember(self, duid: bytes, address: IPv6Address) -> None:
        with self._lock:
            key = duid.hex()
            if self._entries.get(key, ("",))[0] == str(address):
                return
            self._entries[key] = (str(address), time.time())
            if len(self._entries) > MAX_ENTRIES:
                oldest = sorted(self._entries.items(), key=lambda kv: kv[1][1])
                for k, _ in oldest[: len(self._entries) - MAX_ENTRIES]:
                    del self._entries[k]
            try:
                statefile.write_json(
                    self.path, {"entries": {k: list(v) for k, v in self._entries.items()}}
                )
            except CNIError as exc:
                log.warning("DHCPv6 address hints not saved: %s", exc.msg)
