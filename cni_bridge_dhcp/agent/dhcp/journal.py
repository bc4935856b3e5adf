"""The lease journal: one JSON file per attachment under ``<state_dir>/leases/``.

Records are written and removed through ``statefile`` (write-temp, fsync, rename,
fsync(dir)), so a crash leaves either the old or the new record, and a refused write or
removal is a CNIError 105 naming the file. A record that does not parse or validate
anyway (disk trouble, a hand edit) is logged, renamed aside to ``*.corrupt`` for
inspection, and otherwise ignored.
All methods block on disk I/O: the manager calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ...cni.defaults import LEASES_DIR
from ..state import statefile
from .lease import Lease, from_record, to_record

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / LEASES_DIR

    def path_for(self, key: str) -> Path:
        # Keys hold slashes and runtime-chosen text; a digest makes a safe, fixed-size name.
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def write(self, lease: Lease) -> None:
        statefile.write_json(self.path_for(lease.key), to_record(lease))

    def remove(self, key: str) -> bool:
        return statefile.remove(self.path_for(key))

    def load(self) -> list[Lease]:
        """Every valid record; corrupt ones are logged and moved aside, never raised."""
        if not self.dir.is_dir():
            return []
        leases: list[Lease] = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                # An interrupted write: the rename never happened, the old record stands.
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".json":
                continue
            lease = self._read(path)
            if lease is not None:
                leases.append(lease)
        return leases

    def _read(self, path: Path) -> Lease | None:
        try:
            raw = statefile.read_trusted(path)
            if raw is None:
                return None  # gone meanwhile, or not the agent's own file (warned)
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            lease = from_record(record)
            if self.path_for(lease.key) != path:
                raise ValueError(f"key {lease.key!r} does not belong to this file name")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            log.error(
                "lease journal: ignoring corrupt record %s (%s); moved to %s", path, exc, aside
            )
            try:
                os.replace(path, aside)
            except OSError as move_exc:
                log.error("lease journal: cannot move %s aside: %s", path, move_exc)
            return None
        return lease
