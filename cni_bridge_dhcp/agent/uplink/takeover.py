"""Taking the uplink over once per node, and recovering an interrupted takeover at start.

:func:`ensure_uplink` is the entry point; under the node-wide lock it runs
:func:`_ensure_locked`, whose steps are, in order: settle the journal left by an earlier
holder (roll back an interrupted takeover), re-enslave a port that fell out of the bridge,
keep a takeover that is still in place, check the uplink can be used, accept a bridge
that was pre-configured, and otherwise take the uplink over (snapshot first, then the
journaled steps of :mod:`.steps`, rolled back on any failure).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.bridge import BridgeSpec
from ..datapath.netlink import (
    RT_SCOPE_UNIVERSE,
    Message,
    Netlink,
    describe,
    get_link,
    link_kind,
    link_name,
    lookup,
    node_ipr,
)
from ..datapath.rtnl import Rtnl
from ..runtime.faults import maybe_crash
from . import dhcpclients
from . import journal as uj
from .capture import all_routes, capture
from .kernel import in_place
from .plan import (
    AF_INET,
    UplinkSnapshot,
    addresses_to_move,
    default_gateway,
    primary_ipv4,
    replay_plan,
    select_uplink,
)
from .reattach import free_port, reattach_locked
from .rollback import return_to_snapshot, roll_back_interrupted
from .state import SYSFS_NET, UplinkState, ipv4_or_none, is_wireless, state_from_snapshot
from .steps import take_over

log = logging.getLogger(__name__)


def ensure_uplink(
    bridge: BridgeSpec,
    uplink_spec: str,
    state_dir: Path,
    *,
    lock_timeout: float = 30.0,
    verify_timeout: float = 3.0,
    sysfs: Path = SYSFS_NET,
) -> UplinkState:
    """Take the uplink over into ``bridge`` once per node; return the resulting state.

    Raises CNIError(7) for an uplink that cannot be used (missing, wireless, port of another
    master), CNIError(11) when the lock cannot be had in ``lock_timeout`` seconds, and
    CNIError(102) when the takeover failed (the node has been rolled back to its snapshot).
    """
    journal = uj.load(state_dir)
    if (
        journal is not None
        and journal.phase in (uj.DONE, uj.PRECONFIGURED)
        and journal.bridge == bridge.name
        and journal.spec == uplink_spec
        and journal.state is not None
        and journal.belongs_here()
    ):
        with node_ipr() as ipr:
            if in_place(ipr, journal.uplink, journal.bridge):
                return UplinkState.from_dict(journal.state)
    with uj.locked(state_dir, lock_timeout), node_ipr() as ipr:
        return _ensure_locked(ipr, bridge, uplink_spec, state_dir, verify_timeout, sysfs)


def recover(state_dir: Path, *, lock_timeout: float = 30.0) -> str | None:
    """At agent start: finish off an interrupted takeover/restore by rolling back to the snapshot.

    Returns a sentence saying what was done, or None when there was nothing to do.
    """
    if not uj.journal_path(state_dir).exists():
        return None
    with uj.locked(state_dir, lock_timeout):
        journal = uj.load(state_dir)
        if journal is None:
            return None
        if not journal.belongs_here():
            if journal.phase in (uj.DONE, *uj.INTERRUPTED):
                uj.archive(state_dir, "written in another boot or network namespace")
                return "archived an uplink journal from another boot or network namespace"
            return None
        if journal.phase not in uj.INTERRUPTED:
            return None
        with node_ipr() as ipr:
            return roll_back_interrupted(ipr, state_dir, journal)


def _ensure_locked(
    ipr: Netlink,
    bridge: BridgeSpec,
    uplink_spec: str,
    state_dir: Path,
    verify_timeout: float,
    sysfs: Path,
) -> UplinkState:
    journal = _settle_journal(ipr, state_dir)
    if journal is not None and journal.phase == uj.DONE and journal.bridge == bridge.name:
        _reattach_fallen_port(ipr, state_dir, journal, verify_timeout)
    links = [(int(link["index"]), str(link.get_attr("IFLA_IFNAME"))) for link in ipr.get_links()]
    uplink = select_uplink(uplink_spec, links, exclude=[bridge.name])
    if journal is not None:
        kept = _keep_recorded(ipr, state_dir, journal, bridge, uplink_spec, uplink)
        if kept is not None:
            return kept
    link, br_index = _check_usable(ipr, bridge, uplink, sysfs)
    master = link.get_attr("IFLA_MASTER")
    if master:
        if master != br_index:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"uplinkInterface {uplink!r} is already enslaved to {link_name(ipr, master)!r}",
                f"it must be a free interface or a port of bridge {bridge.name!r}",
            )
        return _accept_preconfigured(ipr, bridge.name, uplink, uplink_spec, state_dir)
    return _take_over_fresh(ipr, bridge, uplink, uplink_spec, state_dir, verify_timeout)


def _settle_journal(ipr: Netlink, state_dir: Path) -> uj.Journal | None:
    """The journal to act on: one of another boot is archived, an interrupted one rolled back."""
    journal = uj.load(state_dir, strict=True)  # an unreadable one is never replaced
    if journal is not None and not journal.belongs_here():
        uj.archive(state_dir, "written in another boot or network namespace")
        journal = None
    if journal is not None and journal.phase in uj.INTERRUPTED:
        outcome = roll_back_interrupted(ipr, state_dir, journal)
        log.warning("before taking the uplink over: %s", outcome)
    return journal


def _reattach_fallen_port(
    ipr: Netlink, state_dir: Path, journal: uj.Journal, verify_timeout: float
) -> None:
    """The uplink stopped being a port (NIC re-created, or released by an admin): re-enslave it.

    The node's addresses are still on the bridge, so the journal's snapshot is still the
    pre-takeover truth. A fresh takeover would snapshot an empty eth0 instead.
    """
    with Rtnl() as rt:
        port = free_port(rt, journal)
    if port is None:
        return
    how = "released" if port == journal.port_index() else "re-created"
    log.warning(
        "uplink %s was %s and is no longer a port of %s: re-enslaving it (original "
        "snapshot kept)", journal.uplink, how, journal.bridge,
    )  # fmt: skip
    reattach_locked(ipr, state_dir, journal, port, verify_timeout)


def _keep_recorded(
    ipr: Netlink,
    state_dir: Path,
    journal: uj.Journal,
    bridge: BridgeSpec,
    uplink_spec: str,
    uplink: str,
) -> UplinkState | None:
    """The recorded takeover's state when it is still in place; else archive the journal."""
    if journal.phase not in (uj.DONE, uj.PRECONFIGURED):
        uj.archive(state_dir, f"superseded by a new takeover (was {journal.phase})")
        return None
    if not in_place(ipr, journal.uplink, journal.bridge):
        uj.archive(state_dir, f"the recorded takeover of {journal.uplink} is no longer in place")
        return None
    if journal.bridge != bridge.name or journal.uplink != uplink:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {uplink_spec!r}: this node's uplink {journal.uplink!r} "
            f"is already taken over into bridge {journal.bridge!r}",
            f"asked for {uplink!r} into {bridge.name!r}; one uplink bridge per node",
        )
    assert journal.state is not None
    if journal.spec != uplink_spec:
        journal.spec = uplink_spec
        uj.save(state_dir, journal)
    return UplinkState.from_dict(journal.state)


def _check_usable(
    ipr: Netlink, bridge: BridgeSpec, uplink: str, sysfs: Path
) -> tuple[Message, int | None]:
    """The uplink's link and the bridge's ifindex (None: no bridge yet), or CNIError(7)."""
    link = ipr.link("get", ifname=uplink)[0]
    if is_wireless(uplink, sysfs):
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {uplink!r} is a wireless interface and cannot be bridged",
        )
    br_index = lookup(ipr, bridge.name)
    if br_index is not None:
        kind, _ = link_kind(get_link(ipr, br_index))
        if kind != "bridge":
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"bridge {bridge.name!r} already exists but is not a bridge",
                f"it is a {kind} link" if kind else "it is a link without a kind",
            )
    return link, br_index


def _take_over_fresh(
    ipr: Netlink,
    bridge: BridgeSpec,
    uplink: str,
    uplink_spec: str,
    state_dir: Path,
    verify_timeout: float,
) -> UplinkState:
    """Snapshot the uplink, journal it, then run the steps; roll back on any failure."""
    snapshot = capture(ipr, uplink, bridge.name)
    node_dhcp = _node_dhcp(snapshot, bridge.name)  # CNIError(7) before anything changed
    journal = uj.Journal(
        bridge=bridge.name,
        uplink=uplink,
        spec=uplink_spec,
        phase=uj.IN_PROGRESS,
        snapshot=snapshot,
        steps=["snapshot"],
    )
    uj.save(state_dir, journal)
    log.info(
        "taking uplink %s over into bridge %s: %d addresses, %d routes to replay",
        uplink,
        bridge.name,
        len(addresses_to_move(snapshot)),
        len(replay_plan(snapshot.routes, uplink)),
    )
    maybe_crash("uplink:snapshot")
    try:
        take_over(ipr, bridge, journal, state_dir, verify_timeout)
    except Exception as exc:
        raise _roll_back_failed(ipr, state_dir, journal, exc) from exc
    state = state_from_snapshot(bridge.name, snapshot)
    journal.phase = uj.DONE
    journal.state = state.to_dict()
    uj.save(state_dir, journal)
    log.info("uplink %s taken over into bridge %s", uplink, bridge.name)
    if node_dhcp is not None:
        # Recorded before pausing, so a crash in between still leaves what to resume
        # (SIGCONT to a process that was never stopped changes nothing).
        node_dhcp.paused = [c for c in node_dhcp.clients if c.manager in dhcpclients.PAUSABLE]
        dhcpclients.save_record(state_dir, node_dhcp)
        node_dhcp.paused = dhcpclients.pause(node_dhcp.clients)
        dhcpclients.save_record(state_dir, node_dhcp)
    else:
        dhcpclients.remove_record(state_dir)  # one of an earlier takeover
    _warn_finite_lifetimes(snapshot, bridge.name, node_dhcp)
    return state


def _node_dhcp(snap: UplinkSnapshot, bridge: str) -> dhcpclients.NodeDhcp | None:
    """The record of the node's DHCP-leased address (None: static), or CNIError(7) when
    its client is a manager that cannot stand down for this link."""
    dyn = dhcpclients.dynamic_ipv4(snap)
    if dyn is None or dyn.valid_lft is None:
        return None
    clients = dhcpclients.find_clients(snap.uplink, snap.ifindex, dyn.address)
    refused = dhcpclients.refusal(
        clients, snap.uplink, bridge, f"{dyn.address}/{dyn.prefixlen}", snap.mac
    )
    if refused is not None:
        raise refused
    log.info(
        "address %s/%d on %s is leased by DHCP (%s): the agent keeps the lease alive on %s",
        dyn.address, dyn.prefixlen, snap.uplink,
        ", ".join(f"{c.manager} {c.source}" for c in clients) or "client not found", bridge,
    )  # fmt: skip
    return dhcpclients.NodeDhcp(
        uplink=snap.uplink,
        bridge=bridge,
        mac=snap.mac,
        address=f"{dyn.address}/{dyn.prefixlen}",
        client_id=dhcpclients.node_client_id(clients, snap.mac),
        valid_lft=dyn.valid_lft,
        clients=clients,
    )


def _roll_back_failed(
    ipr: Netlink, state_dir: Path, journal: uj.Journal, exc: Exception
) -> CNIError:
    """Roll a failed takeover back to its snapshot; the CNIError(102) saying what happened."""
    uplink, bridge = journal.uplink, journal.bridge
    step = journal.steps[-1]
    reason = exc.msg if isinstance(exc, CNIError) else describe(exc)
    log.error("uplink takeover failed at step %s: %s; rolling back", step, reason, exc_info=exc)
    journal.phase = uj.ROLLING_BACK
    journal.error = f"step {step}: {reason}"
    uj.save(state_dir, journal)
    try:
        problems = return_to_snapshot(ipr, journal, delete_any_bridge=False)
    except Exception as rb_exc:
        log.exception("rollback of uplink %s failed", uplink)
        return CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink takeover of {uplink!r} into {bridge!r} failed at step {step} "
            "and its rollback failed too",
            f"{reason}; rollback: {describe(rb_exc)}; the agent retries the rollback "
            "at its next start, or run `cni-bridge-dhcp uplink restore --force`",
        )
    journal.phase = uj.ROLLED_BACK
    uj.save(state_dir, journal)
    details = reason + ("; after rollback: " + "; ".join(problems) if problems else "")
    return CNIError(
        ErrorCode.UPLINK_FAILED,
        f"uplink takeover of {uplink!r} into {bridge!r} failed at step {step}; "
        "the uplink was restored",
        details,
    )


def _accept_preconfigured(
    ipr: Netlink, bridge: str, uplink: str, spec: str, state_dir: Path
) -> UplinkState:
    """The uplink is already a port of the bridge: accept it untouched, if the node is on it."""
    br_snap = capture(ipr, bridge, None)
    up_snap = capture(ipr, uplink, None)
    bridge_global = [a for a in br_snap.addresses if a.scope == RT_SCOPE_UNIVERSE]
    uplink_global = [a for a in up_snap.addresses if a.scope == RT_SCOPE_UNIVERSE]
    if uplink_global and not bridge_global:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {uplink!r} is a port of bridge {bridge!r} but still holds the "
            "node's addresses",
            "addresses on a bridge port are unusable; move them to the bridge or release the port",
        )
    moved = tuple(a for a in br_snap.addresses if a.scope == RT_SCOPE_UNIVERSE)
    state = UplinkState(
        bridge=bridge,
        uplink=uplink,
        mac=br_snap.mac,
        addresses=tuple(a.interface for a in moved),
        node_ipv4=primary_ipv4(moved),
        gateway4=ipv4_or_none(default_gateway(all_routes(ipr), AF_INET)),
        preconfigured=True,
    )
    journal = uj.Journal(
        bridge=bridge,
        uplink=uplink,
        spec=spec,
        phase=uj.PRECONFIGURED,
        state=state.to_dict(),
    )
    uj.save(state_dir, journal)
    log.info("bridge %s with uplink %s is pre-configured; accepted untouched", bridge, uplink)
    return state


def _warn_finite_lifetimes(
    snap: UplinkSnapshot, bridge: str, kept: dhcpclients.NodeDhcp | None
) -> None:
    for a in addresses_to_move(snap):
        if kept is not None and f"{a.address}/{a.prefixlen}" == kept.address:
            continue  # the agent's node lease keeper renews it
        if a.valid_lft is not None and a.family == AF_INET:
            log.warning(
                "address %s/%d on %s has a finite lifetime (%ds): a DHCP client still "
                "configured on %s cannot renew it; configure it on %s instead",
                a.address, a.prefixlen, bridge, a.valid_lft, snap.uplink, bridge,
            )  # fmt: skip
