"""Uplink takeover: move the node's LAN interface into the pod bridge, safely.

The node's uplink (``eth0``) becomes a port of the bridge and everything that made it the
node's interface - MAC, IPv4/IPv6 addresses, routes of every table, permanent neighbours,
MTU, IPv6 RA settings - moves to the bridge. Done wrong this cuts the node off its network,
so it is done as a journaled sequence of small steps:

1. snapshot the uplink and write it to the journal before touching anything (capture.py);
2. each step's name is journaled before the step runs (``bridge``, ``mac``, ``addr:<n>``,
   ``enslave``, ``route:<n>``, ``neigh``, ``verify``; steps.py, kernel.py, port.py);
3. after the move, the node must still reach its default gateway (ARP through the bridge;
   verify.py);
4. any failure rolls back to the snapshot; a process that dies mid-way leaves the journal
   "in progress", and the next holder of the lock (agent start via :func:`recover`, or any
   :func:`ensure_uplink`) rolls it back before doing anything else (rollback.py).

One takeover per node: ``flock`` on ``<state_dir>/uplink.lock`` serialises agents and
threads; callers arriving later find the journal "done" (without taking the lock when the
takeover is visibly still in place) and return at once (takeover.py). A NIC that falls
out of the bridge is re-enslaved by reattach.py (driven by watch.py). The pure planning
(which routes to replay, which addresses move) is plan.py; the journal is journal.py.

This package's namespace is the public API; the modules are its implementation.
"""

from .capture import snapshot_differences
from .reattach import RECREATED, RELEASED, PortCheck, check_port
from .rollback import restore
from .state import UplinkState, current_state, is_wireless
from .takeover import ensure_uplink, recover

__all__ = [
    "RECREATED",
    "RELEASED",
    "PortCheck",
    "UplinkState",
    "check_port",
    "current_state",
    "ensure_uplink",
    "is_wireless",
    "recover",
    "restore",
    "snapshot_differences",
]
