"""The node's table of allowed DHCP servers' link-layer sources: ``<state_dir>/dhcp-servers.json``.

``ipam.serverAllowList`` names servers by their server identifier (option 54), which any LAN
host can write into a reply. So the first lease from an allowed server also records the
source MAC of its reply, per network, here; from then on, a reply claiming that server id
from another MAC is ignored, by every pod of the node (new ones included) and across agent
restarts. The first learner wins: a later lease never changes an entry (that is the point),
so a server whose NIC changed needs its entry removed from this file, or its MAC pinned with
``"ip@mac"`` in the allow list, which takes precedence.

The MAC learned is that of the last hop: the server's own, or the relay's (the router's)
when the server is behind a DHCP relay.

Blocking (disk I/O): the manager calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

from ...cni.defaults import DHCP_SERVERS
from ..state import statefile

log = logging.getLogger(__name__)

FILE_NAME = DHCP_SERVERS
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _entry_key(network: str, server: IPv4Address) -> str:
    return f"{network}|{server}"


class ServerMacs:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._lock = threading.Lock()  # learn() is read-modify-write, from worker threads
        # get() runs for every reply from an allowed server, on the event loop: the file is
        # re-read only when it changed (an admin may remove an entry while the agent runs).
        self._cache: tuple[tuple[int, int, int] | None, dict[str, dict[str, object]]] = (None, {})

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> dict[str, dict[str, object]]:
        data = statefile.read_json(self.path)
        if data is None:
            return {}
        servers = data.get("servers")
        good: dict[str, dict[str, object]] = {}
        if isinstance(servers, dict):
            for key, entry in servers.items():
                if isinstance(entry, dict) and _MAC.match(str(entry.get("mac", ""))):
                    good[str(key)] = entry
        if not isinstance(servers, dict) or len(good) != len(servers):
            # Wrong shape: keep the valid entries, set the file aside for inspection.
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("ignoring malformed entries of %s; moved to %s", self.path, aside)
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                log.error("cannot move %s aside: %s", self.path, exc)
        return good

    def get(self, network: str, server: IPv4Address) -> str | None:
        stamp = self._stamp()
        if stamp is None:
            return None
        if self._cache[0] != stamp:
            self._cache = (stamp, self._load())
        entry = self._cache[1].get(_entry_key(network, server))
        return str(entry["mac"]) if entry else None

    def learn(self, network: str, server: IPv4Address, mac: str) -> bool:
        """Record ``mac`` for ``server`` unless an entry exists; True if it was recorded."""
        mac = mac.lower()
        if not _MAC.match(mac):
            return False
        with self._lock:
            servers = self._load()
            key = _entry_key(network, server)
            if key in servers:
                return False
            servers[key] = {
                "network": network,
                "server_id": str(server),
                "mac": mac,
                "learned_at": time.time(),
            }
            statefile.write_json(self.path, {"version": 1, "servers": servers})
        return True
