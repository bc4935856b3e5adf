"""The lease journal: one JSON file per attachment under ``<state_dir>/leases/``.

Each write is write-temp, fsync, rename, fsync(dir), so a crash leaves either the old or
the new record. A record that does not parse or validate anyway (disk trouble, a hand
edit) is logged, renamed aside to ``*.corrupt`` for inspection, and otherwise ignored.
All methods block on disk I/O: the manager calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
from pathlib import Path

from .lease import Lease, from_record, to_record

log = logging.getLogger(__name__)

_tmp_counter = itertools.count()


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "leases"

    def path_for(self, key: str) -> Path:
        # Keys hold slashes and runtime-chosen text; a digest makes a safe, fixed-size name.
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def write(self, lease: Lease) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.path_for(lease.key)
        tmp = self.dir / f".{path.stem}.{os.getpid()}.{next(_tmp_counter)}.tmp"
        body = json.dumps(to_record(lease), indent=1, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            # full or failing disk: the old record stands, and no temporary is left behind
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def remove(self, key: str) -> bool:
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            return False
        self._fsync_dir()
        return True

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
            raw = path.read_bytes()
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            lease = from_record(record)
            if self.path_for(lease.key) != path:
                raise ValueError(f"key {lease.key!r} does not belong to this file name")
        except (OSError, ValueError, KeyError, TypeError) as exc:
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

    def _fsync_dir(self) -> None:
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
