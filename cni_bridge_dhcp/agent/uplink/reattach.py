"""A uplink that stopped being the bridge's port: re-enslaved, or reported as released.

The NIC may be re-created (re-plugged, driver reloaded) or released by an admin
(``ip link set nomaster``); the node's addresses are still on the bridge, so the
journal's snapshot stays the pre-takeover truth and is kept.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.netlink import (
    RT_SCOPE_UNIVERSE,
    RT_TABLE_LOCAL,
    RTPROT_KERNEL,
    Netlink,
    NetlinkError,
    describe,
    get_link,
    lookup,
    node_ipr,
)
from ..datapath.rtnl import Link, Rtnl
from . import journal as uj
from .capture import addr_from_msg, all_routes
from .kernel import addr_del, route_del
from .plan import AF_INET6, AddrSnap
from .port import quiet_port
from .verify import verify_gateway

log = logging.getLogger(__name__)


RECREATED = "re-created"


RELEASED = "released"


@dataclass(frozen=True)
class PortCheck:
    """What :func:`check_port` found: a port ``re-created`` (and re-enslaved) or ``released``."""

    kind: str
    ifindex: int
    message: str


def check_port(
    state_dir: Path, *, lock_timeout: float = 30.0, verify_timeout: float = 3.0
) -> PortCheck | None:
    """For the link watcher: re-enslave a re-created uplink; report one released on purpose.

    A link under the recorded name (or, for a NIC back under another name, a physical link
    with the recorded MAC) that is no port of the bridge is either the port we made,
    released by ``ip link set nomaster`` (same ifindex: left alone until the next ADD), or
    a new link (NIC re-plugged, driver reloaded): re-enslaved at once, keeping the
    original snapshot. None when nothing needs attention (or no takeover of ours exists).
    """
    journal = _watched_journal(state_dir)
    if journal is None:
        return None
    with Rtnl() as rt:  # raw: asked every few seconds on an idle node
        index = free_port(rt, journal)
    if index is None:
        return None
    if index == journal.port_index():
        return PortCheck(
            RELEASED,
            index,
            f"uplink {journal.uplink} (ifindex {index}) is no longer a port of "
            f"{journal.bridge} (ip link set nomaster?): left alone until the next ADD",
        )
    with uj.locked(state_dir, lock_timeout), node_ipr() as ipr, Rtnl() as rt:
        journal = _watched_journal(state_dir)
        if journal is None or free_port(rt, journal) != index:
            return None  # someone else (an ADD) dealt with it meanwhile
        old = journal.port_index()
        reattach_locked(ipr, state_dir, journal, index, verify_timeout)
    return PortCheck(
        RECREATED,
        index,
        f"uplink {journal.uplink} was re-created (ifindex {old} -> {index}): re-enslaved "
        f"into {journal.bridge}, original snapshot kept",
    )


def _watched_journal(state_dir: Path) -> uj.Journal | None:
    journal = uj.load(state_dir)
    if (
        journal is None
        or journal.phase != uj.DONE
        or journal.snapshot is None
        or not journal.belongs_here()
    ):
        return None
    return journal


def free_port(rt: Rtnl, journal: uj.Journal) -> int | None:
    """ifindex of the uplink when it exists and is no port of any master, else None.

    Raw rtnetlink, not pyroute2: the link watcher asks every 5 s on an idle node, and with
    pyroute2's lookups and full link parses that was most of an idle agent's CPU (0.17-0.25 %
    of a core against 0.10 % now, measured with one lease held)."""
    snap = journal.snapshot
    assert snap is not None
    bridge = rt.get_link(name=journal.bridge)
    if bridge is None or bridge.kind != "bridge":
        return None  # without the bridge there is nothing to re-enslave into
    port = rt.get_link(name=journal.uplink)
    if port is None:
        port = _nic_by_mac(rt, snap.mac.lower(), bridge.index)
    if port is None or port.master:
        return None
    return port.index


# Kinds a node's uplink can be; stacked links (vlan, macvlan, ...) share their parent's
# MAC and must never be mistaken for it. A physical NIC has no kind; a veth is the uplink
# of containerised or nested nodes (and of the test sandboxes).
_UPLINK_KINDS = (None, "veth")


def _nic_by_mac(rt: Rtnl, mac: str, br_index: int) -> Link | None:
    """A link that can be an uplink (see ``_UPLINK_KINDS``) whose MAC is ``mac``."""
    for link in rt.links():
        if link.index == br_index or link.kind not in _UPLINK_KINDS:
            continue
        if mac in (link.address, link.perm_address):
            return link
    return None


def reattach_locked(
    ipr: Netlink, state_dir: Path, journal: uj.Journal, index: int, verify_timeout: float
) -> None:
    """Make link ``index`` the bridge's port again; the journal keeps its snapshot."""
    snap = journal.snapshot
    assert snap is not None
    br_index = lookup(ipr, journal.bridge)
    if br_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"bridge {journal.bridge!r} disappeared")
    name = str(get_link(ipr, index).get_attr("IFLA_IFNAME"))
    if name != snap.uplink:
        # Restore, status and doctor know the uplink by its recorded name.
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=snap.uplink)
        log.warning("the uplink came back as %s (MAC %s): renamed to %s", name, snap.mac,
                    snap.uplink)  # fmt: skip
        name = snap.uplink
    on_bridge = {
        ipaddress.ip_address(addr_from_msg(m).address)
        for m in ipr.addr("dump")
        if m["index"] == br_index
    }
    flush: list[AddrSnap] = []
    foreign: list[AddrSnap] = []
    for a in (addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index):
        if a.scope != RT_SCOPE_UNIVERSE:
            continue
        dynamic6 = a.family == AF_INET6 and a.valid_lft is not None  # RA-learned
        (flush if dynamic6 or ipaddress.ip_address(a.address) in on_bridge else foreign).append(a)
    if foreign:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink {name!r} holds addresses bridge {journal.bridge!r} does not: not re-enslaved",
            ", ".join(f"{a.address}/{a.prefixlen}" for a in foreign)
            + "; a port's addresses are unusable: move them to the bridge or remove them",
        )
    quiet_port(index, name, snap)
    for a in flush:
        addr_del(ipr, index, a)
    # Routes through the new link (a DHCP client's default route, say) bypass the bridge.
    for route in all_routes(ipr):
        if route.dev == name and route.table != RT_TABLE_LOCAL and route.proto != RTPROT_KERNEL:
            with contextlib.suppress(NetlinkError, CNIError):
                route_del(ipr, route, {name: index})
    br_mtu = int(get_link(ipr, br_index).get_attr("IFLA_MTU"))
    if int(get_link(ipr, index).get_attr("IFLA_MTU")) != br_mtu:
        try:
            ipr.link("set", index=index, mtu=br_mtu)
        except NetlinkError as exc:
            log.warning("uplink %s: MTU %d not applied: %s", name, br_mtu, describe(exc))
    ipr.link("set", index=index, master=br_index)
    if snap.up:
        ipr.link("set", index=index, state="up")
    journal.port_ifindex = index
    uj.save(state_dir, journal)
    log.warning("uplink %s (ifindex %d) re-enslaved into bridge %s", name, index, journal.bridge)
    try:
        verify_gateway(ipr, br_index, journal.bridge, snap, verify_timeout)
    except CNIError as exc:
        # Nothing better to fall back to: the node's addresses live on the bridge.
        log.error("after re-enslaving %s: %s", name, exc.msg)
