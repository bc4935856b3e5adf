"""The agent's state dir: attachments against their namespaces, the uplink journal, lease records."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from ....agent.uplink import journal as uj
from ....cni.defaults import LEASES_DIR
from .. import checks as dc
from .common import read_text
from .context import Context, label


def state_check(ctx: Context) -> list[dc.Finding]:
    atts = []
    for att in ctx.attachments:
        try:
            current: int | None = os.stat(str(att["netns"])).st_ino
        except OSError:
            current = None
        atts.append(
            dc.AttachmentFacts(
                key=f"{att['network']}/{att['container_id']}/{att['ifname']}",
                label=label(att),
                state=str(att.get("state", "")),
                netns=str(att["netns"]),
                netns_inode=int(att.get("netns_inode", 0)),
                current_inode=current,
                created=float(att.get("created", 0.0)),
            )
        )
    journal_facts = None
    journal = uj.load(ctx.state_dir) if uj.journal_path(ctx.state_dir).exists() else None
    if journal is not None:
        journal_facts = dc.JournalFacts(
            phase=journal.phase,
            uplink=journal.uplink,
            bridge=journal.bridge,
            last_step=journal.steps[-1] if journal.steps else "none",
            belongs_here=journal.belongs_here(),
            lock_held=_lock_held(ctx.state_dir / uj.LOCK_NAME),
            updated_at=journal.updated_at,
        )
    records = []
    for path in sorted((ctx.state_dir / LEASES_DIR).glob("*.json")):
        text = read_text(path)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(data, dict) and "key" in data:
            records.append(dc.LeaseRecordFacts(str(data["key"]), str(data.get("address", "?"))))
    return dc.check_state(str(ctx.state_dir), atts, journal_facts, records, time.time())


def _lock_held(path: Path) -> bool:
    """Whether another process holds the takeover lock now (never creates the file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # also drops the lock if we got it
    return False
