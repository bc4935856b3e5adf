"""Facts for the node-lease check: the node's address lifetime, the takeover record, the
DHCP clients on the uplink and the agent's node lease journal."""

from __future__ import annotations

import time
from pathlib import Path

from ....agent.datapath.netlink import node_ipr
from ....agent.dhcp.nodelease import JOURNAL_NAME
from ....agent.state.statefile import read_json
from ....agent.uplink import journal as uj
from ....agent.uplink.capture import capture
from ....agent.uplink.dhcpclients import Paths, dynamic_ipv4, find_clients, load_record
from ....cni.errors import CNIError
from ..checks.nodelease import NodeLeaseFacts, check_node_lease
from ..findings import Finding
from .context import Context


def node_lease_check(ctx: Context) -> list[Finding]:
    journal = uj.load(ctx.state_dir) if uj.journal_path(ctx.state_dir).exists() else None
    taken = journal is not None and journal.phase == uj.DONE
    pre = journal is not None and journal.phase == uj.PRECONFIGURED
    where = ctx.bridge if (taken or pre) else ctx.uplink
    try:
        with node_ipr() as ipr:
            snap = capture(ipr, where, None)
            ifindex = (
                capture(ipr, ctx.uplink, None).ifindex if where != ctx.uplink else snap.ifindex
            )
    except CNIError:
        return []  # the uplink check reports a missing interface
    dyn = dynamic_ipv4(snap)
    address = f"{dyn.address}/{dyn.prefixlen}" if dyn else None
    # Lease files below --root (the host's, from the DaemonSet); processes from /proc.
    paths = Paths(proc=Path("/proc"), run=ctx.root / "run", var_lib=ctx.root / "var" / "lib")
    kept = read_json(ctx.state_dir / JOURNAL_NAME) if taken else None
    expires = kept.get("expires_at") if kept else None
    facts = NodeLeaseFacts(
        uplink=ctx.uplink,
        bridge=ctx.bridge,
        mac=snap.mac,
        taken_over=taken,
        preconfigured=pre,
        dynamic=address,
        valid_lft=dyn.valid_lft if dyn else None,
        record=load_record(ctx.state_dir) if taken else None,
        clients=find_clients(ctx.uplink, ifindex, dyn.address, paths) if dyn and not taken else [],
        kept_until=float(expires) if isinstance(expires, int | float) else None,
        now=time.time(),
    )
    return [check_node_lease(facts)]
