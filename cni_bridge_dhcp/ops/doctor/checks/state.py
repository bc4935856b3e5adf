"""The agent's state dir: attachments, the uplink journal, lease records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..findings import STATE, Finding, bad, ok


@dataclass(frozen=True)
class AttachmentFacts:
    key: str
    label: str
    state: str
    netns: str
    netns_inode: int
    current_inode: int | None  # None: the path no longer exists
    created: float


@dataclass(frozen=True)
class JournalFacts:
    phase: str
    uplink: str
    bridge: str
    last_step: str
    belongs_here: bool
    lock_held: bool  # another process holds the takeover lock right now
    updated_at: float


@dataclass(frozen=True)
class LeaseRecordFacts:
    key: str
    address: str


PENDING_GRACE = 600.0  # an ADD that has been "pending" this long is not still running


def check_state(
    state_dir: str,
    attachments: Sequence[AttachmentFacts],
    journal: JournalFacts | None,
    lease_records: Sequence[LeaseRecordFacts],
    now: float,
) -> list[Finding]:
    findings: list[Finding] = []
    for att in attachments:
        if att.current_inode is None or att.current_inode != att.netns_inode:
            why = "no longer exists" if att.current_inode is None else "is another namespace now"
            findings.append(
                bad(
                    STATE,
                    f"stale attachment {att.label}: its network namespace {att.netns} {why}, "
                    "but the agent still keeps its record (and its lease, firewall rules)",
                    "The runtime never sent DEL for it (kubelet or runtime crash, a forced "
                    "pod deletion, a DEL while the agent was down). The agent cleans it up at "
                    "its next start (the lease is released from the node, the rules and the "
                    "record go); to do it now: run the plugin with CNI_COMMAND=DEL "
                    f"CNI_CONTAINERID={att.key.split('/')[1]} CNI_IFNAME={att.key.split('/')[-1]} "
                    "CNI_NETNS= CNI_PATH=/opt/cni/bin and the network config on stdin (a DEL "
                    "whose netns is gone still sends the DHCPRELEASE, from the node, and "
                    "removes the rules and the record).",
                )
            )
        elif att.state == "pending" and now - att.created > PENDING_GRACE:
            findings.append(
                bad(
                    STATE,
                    f"attachment {att.label} has been pending for {int(now - att.created)} s: "
                    "an ADD was interrupted",
                    "Restart the agent: at start-up it tears down interrupted ADDs, and the "
                    "runtime retries the pod.",
                )
            )
    keys = {a.key for a in attachments}
    for rec in lease_records:
        if rec.key not in keys:
            findings.append(
                bad(
                    STATE,
                    f"lease record {rec.key} ({rec.address}) has no attachment: the agent "
                    "renews a lease no pod uses",
                    "Restart the agent (at start-up it releases, from the node, the leases "
                    "whose pod is gone) or send DEL for that container as above.",
                )
            )
    if journal is not None:
        if journal.phase in ("in_progress", "rolling_back", "restoring") and not journal.lock_held:
            findings.append(
                bad(
                    STATE,
                    f"the uplink takeover of {journal.uplink} into {journal.bridge} was "
                    f"interrupted (phase {journal.phase}, last step {journal.last_step}): the "
                    "node's network may be half-moved",
                    "Start (or restart) the agent: it rolls the uplink back to its snapshot "
                    "before anything else; or run `cni-bridge-dhcp uplink restore` now. "
                    f"The snapshot is in {state_dir}/uplink.json.",
                )
            )
        elif not journal.belongs_here and journal.phase in ("done", "in_progress"):
            findings.append(
                bad(
                    STATE,
                    f"the uplink journal in {state_dir} is from another boot or network namespace",
                    "Restart the agent: it archives the old journal and takes the uplink over "
                    "afresh at the next pod ADD.",
                )
            )
    if not findings:
        findings.append(
            ok(
                STATE,
                f"{len(attachments)} attachment record(s), all with live namespaces; uplink "
                f"journal {journal.phase if journal else 'absent'}",
            )
        )
    return findings
