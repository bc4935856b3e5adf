"""IPv6 settings of the uplink port and of the bridge that takes its place (sysctls)."""

from __future__ import annotations

import logging

from ..datapath.sysctl import read_sysctl, write_sysctl
from .plan import UplinkSnapshot

log = logging.getLogger(__name__)


def bridge_ipv6(brname: str, snap: UplinkSnapshot) -> None:
    """The bridge gets the uplink's IPv6 autoconfiguration settings (it is the node's now),
    and no duplicate address detection.

    The addresses moved onto the bridge, and the link-local it forms from the uplink's MAC,
    are the node's own, already checked on the uplink. With DAD on, each went tentative
    again until the bridge had a port and one DAD probe had gone unanswered: the node had no
    usable IPv6 address, and sent no router solicitation, for ~1.7 s after every takeover."""
    for key, value in (("accept_ra", _bridge_accept_ra(snap)), ("autoconf", snap.autoconf)):
        if value is not None:
            write_sysctl(f"net/ipv6/conf/{brname}/{key}", value)
    write_sysctl(f"net/ipv6/conf/{brname}/accept_dad", "0")  # best effort: IPv6 may be off


def _bridge_accept_ra(snap: UplinkSnapshot) -> str | None:
    """The bridge takes over the uplink's RA acceptance, made immune to forwarding.

    A host with IPv6 forwarding on ignores RAs unless ``accept_ra=2``: an uplink that
    accepted them (1, forwarding off) hands the bridge 2, so the node keeps its SLAAC
    prefix and default route even when forwarding is turned on later (2 acts as 1 while
    forwarding is off). An uplink that ignored RAs, or forwarded, keeps its value.
    """
    forwarding = read_sysctl(f"net/ipv6/conf/{snap.uplink}/forwarding")
    if snap.accept_ra == "1" and forwarding != "1":
        return "2"
    return snap.accept_ra


def quiet_port(index: int, name: str, snap: UplinkSnapshot) -> None:
    """Before enslaving: the port must never autoconfigure, learn RAs or hold IPv6 routes.

    RA-learned routes on the port (``<prefix>/64 dev eth0 proto kernel``, ``default via
    fe80::... dev eth0 proto ra``) would win over the bridge's and break the node's IPv6.
    ``disable_ipv6`` also flushes what the port already learned (addresses and every IPv6
    route through it); frames still cross it at layer 2. Skipped, like the rest of the
    snapshot's IPv6 settings, when the snapshot did not record it.
    """
    for key, value in (("accept_ra", "0"), ("autoconf", "0")):
        write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    if snap.disable_ipv6 is not None:
        write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
    log.debug("uplink port %s (ifindex %d): IPv6 autoconfiguration and RAs off", name, index)


def unquiet_port(name: str, snap: UplinkSnapshot) -> None:
    """Give the uplink back its own IPv6 settings (RA settings first, then IPv6 itself)."""
    for key, value in (
        ("accept_ra", snap.accept_ra),
        ("autoconf", snap.autoconf),
        ("disable_ipv6", snap.disable_ipv6),
    ):
        if value is not None:
            write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
