"""`cni-bridge-dhcp uplink restore`: undo the uplink takeover locally (needs the full install)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..agent.dhcp.nodelease import JOURNAL_NAME as NODE_LEASE_JOURNAL
from ..agent.state.attachments import AttachmentStore
from ..agent.state.statefile import remove
from ..agent.uplink import restore
from ..cni.defaults import DEFAULT_SOCKET, DEFAULT_STATE_DIR
from ..cni.errors import CNIError


def uplink_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cni-bridge-dhcp uplink")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("restore", help="undo the uplink takeover")
    r.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    r.add_argument("--socket", default=DEFAULT_SOCKET)
    r.add_argument("--force", action="store_true", help="restore even if pods remain")
    args = p.parse_args(argv)
    state_dir = Path(args.state_dir)
    pods = AttachmentStore(state_dir).all()
    try:
        state = restore(state_dir, pods_present=bool(pods), force=args.force)
    except CNIError as err:
        sys.stderr.write(f"cni-bridge-dhcp uplink restore: {err.msg}\n")
        if err.details:
            sys.stderr.write(f"{err.details}\n")
        return 1
    if state is not None:
        # The node lease went back to its own client with the address (an agent still
        # running sees the takeover gone and stops keeping it).
        remove(state_dir / NODE_LEASE_JOURNAL)
    if state is None:
        print("nothing to restore: no uplink takeover is recorded")
    else:
        print(
            f"restored {state.uplink}: addresses, routes and MAC are back; {state.bridge} released"
        )
    return 0
