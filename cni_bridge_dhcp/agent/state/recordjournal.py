"""A journal of records, one JSON file per key in a directory of the state dir: the DHCPv4
lease journal (dhcp/journal.py) and the DHCPv6 one (dhcp/v6/lease.py) are two of it.

Records are written and removed through ``statefile`` (write-temp, fsync, rename,
fsync(dir)), so a crash leaves either the old or the new record, and a refused write or
removal is a CNIError 105 naming the file. A record that does not parse or validate
anyway (disk trouble, a hand edit) is logged, renamed aside to ``*.corrupt`` for
inspection, and otherwise ignored. All methods block on disk I/O: callers use
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from . import statefile

log = logging.getLogger(__name__)


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=Keyed)


class RecordJournal(Generic[R]):
    """``<state_dir>/<dirname>/<digest of key>.json`` per record; ``label`` names the
    journal in logs ("lease journal")."""

    def __init__(
        self,
        state_dir: Path,
        dirname: str,
        *,
        to_record: Callable[[R], dict[str, Any]],
        from_record: Callable[[Mapping[str, Any]], R],
        label: str,
    ) -> None:
        self.dir = Path(state_dir) / dirname
        self._dir = str(self.dir)
        self._to_record = to_record
        self._from_record = from_record
        self.label = label

    def path_for(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        return statefile.keyed_file(self._dir, key, 40)

    def write(self, record: R) -> None:
        statefile.write_json(self._file(record.key), self._to_record(record))

    def remove(self, key: str) -> bool:
        return statefile.remove(self._file(key))

    def load(self) -> list[R]:
        """Every valid record; corrupt ones are logged and moved aside, never raised."""
        if not self.dir.is_dir():
            return []
        records: list[R] = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                # An interrupted write: the rename never happened, the old record stands.
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".json":
                continue
            record = self._read(path)
            if record is not None:
                records.append(record)
        return records

    def _read(self, path: Path) -> R | None:
        try:
            raw = statefile.read_trusted(path)
            if raw is None:
                return None  # gone meanwhile, or not the agent's own file (warned)
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            record = self._from_record(data)
            if self.path_for(record.key) != path:
                raise ValueError(f"key {record.key!r} does not belong to this file name")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            log.error(
                "%s: ignoring corrupt record %s (%s); moved to %s", self.label, path, exc, aside
            )
            try:
                os.replace(path, aside)
            except OSError as move_exc:
                log.error("%s: cannot move %s aside: %s", self.label, path, move_exc)
            return None
        return record


# -- field checks for from_record: a ValueError names the field -------------------------------

_T = TypeVar("_T")


def typed_field(record: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    """``record[name]``, which must be a ``kind`` (a bool is no int)."""
    value = record[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"field {name!r} is not {kind.__name__}")
    return value


def number_field(record: Mapping[str, Any], name: str) -> float:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {name!r} is not a number")
    return float(value)


def opt_str_field(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"field {name!r} is not a string")
    return value
