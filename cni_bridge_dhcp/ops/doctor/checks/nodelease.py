"""The node's own DHCP-leased address across the takeover: who keeps it alive, or why the
takeover will be refused (agent/uplink/dhcpclients.py, agent/dhcp/nodelease.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ....agent.uplink.dhcpclients import PAUSABLE, NodeDhcp, PrevClient, refusal
from ..findings import NODE_LEASE, Finding, bad, ok


@dataclass(frozen=True)
class NodeLeaseFacts:
    uplink: str
    bridge: str
    mac: str
    taken_over: bool  # by this agent (journal done), not a pre-configured bridge
    preconfigured: bool
    dynamic: str | None  # "ip/prefix" with a finite lifetime on the node's interface
    valid_lft: int | None
    record: NodeDhcp | None
    clients: list[PrevClient] = field(default_factory=list)  # found now on the uplink
    kept_until: float | None = None  # the keeper's journaled expiry (wall clock)
    now: float = 0.0


def _who(clients: list[PrevClient]) -> str:
    return ", ".join(f"{c.manager}" + (f" (pid {c.pid})" if c.pid else "") for c in clients)


def check_node_lease(f: NodeLeaseFacts) -> Finding:
    if f.dynamic is None:
        return ok(NODE_LEASE, "the node's IPv4 address is static (no lease to keep)")
    if f.preconfigured:
        return ok(NODE_LEASE, f"{f.dynamic} is on the pre-configured bridge {f.bridge}: "
                  "its network manager keeps the lease")  # fmt: skip
    if f.taken_over:
        if f.record is None:
            return bad(
                NODE_LEASE,
                f"{f.dynamic} on {f.bridge} is a DHCP lease ({f.valid_lft}s left) that nothing "
                "renews: the takeover was made by an agent without the node lease keeper",
                "run `cni-bridge-dhcp uplink restore` (pods removed) and let this agent take "
                "the uplink over again, or configure the bridge in the network manager",
            )
        paused = _who(f.record.paused) or "no client process found"
        if f.kept_until is None or f.kept_until <= f.now:
            return bad(
                NODE_LEASE,
                f"the agent is not keeping the node's lease for {f.dynamic} on {f.bridge} "
                f"({f.valid_lft}s left)",
                "start the agent (it re-adopts the node lease), and read its log for `node:` lines",
            )
        return ok(NODE_LEASE, f"{f.dynamic} on {f.bridge} is leased by DHCP and kept by the "
                  f"agent (client id {f.record.client_id or 'none'}, lease ends in "
                  f"{f.kept_until - f.now:.0f}s); paused at takeover: {paused}")  # fmt: skip
    refused = refusal(f.clients, f.uplink, f.bridge, f.dynamic, f.mac)
    if refused is not None:
        return bad(NODE_LEASE, refused.msg + "; the takeover will be refused (code 7)",
                   refused.details)  # fmt: skip
    pausable = [c for c in f.clients if c.manager in PAUSABLE]
    if pausable:
        return ok(NODE_LEASE, f"{f.dynamic} on {f.uplink} is leased by {_who(pausable)}: "
                  "paused (SIGSTOP) at the takeover, the agent keeps the lease, "
                  "`uplink restore` resumes it")  # fmt: skip
    return ok(NODE_LEASE, f"{f.dynamic} on {f.uplink} is a DHCP lease with no client running: "
              "the agent keeps it from the takeover on (client id 01+MAC)")  # fmt: skip
