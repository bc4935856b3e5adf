"""The pod's IPv6 address from the LAN's router advertisements (SLAAC), and the node side.

The kernel does SLAAC itself: the pod interface comes up with ``accept_ra`` (the namespace
default), sends a router solicitation at once (``router_solicitation_delay=0``) and forms
its address from the RA's prefix and the interface identifier of its MAC (EUI-64, the
namespace default ``addr_gen_mode=0``), so a pod with a stable MAC gets a stable address.
ADD only waits for it (``ra_wait_for``: as long as RFC 4861 lets a router take on a LAN the
node learned RAs from, briefly where it cannot tell or learned none), counted from link-up
so DHCPv4 runs meanwhile, then, when the address is still tentative (DAD on), until DAD
ends, bounded by ``ipam.timeout``.

With ``defaultRoute: "node"`` the pod must not take the RA's default route
(``accept_ra_defrtr=0``; the prefix information still configures the address); its IPv6
default goes via the node's link-local address on the bridge instead (link-local is
on-link: no host route needed), and the node forwards IPv6. Turning on
``net.ipv6.conf.all.forwarding`` makes every interface with ``accept_ra=1`` ignore RAs and
purges their RA-learned default routes, so the bridge gets ``accept_ra=2`` first: the node
keeps its own IPv6 default route and SLAAC address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import time
from dataclasses import dataclass

from .netlink import RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN
from .rtnl import Rtnl, Subscription, rtnl_in
from .sysctl import PROC_SYS, read_sysctl, write_sysctl

log = logging.getLogger(__name__)

# Seconds ADD waits for an RA after the pod link is up, by what the node knows of its LAN.
# A LAN the node learned RAs from: RFC 4861 (6.2.6, 10.) lets a router hold its answer to a
# solicitation until MIN_DELAY_BETWEEN_RAS (3 s) after its previous multicast RA, plus up
# to MAX_RA_DELAY_TIME (0.5 s): the second of two pods added in a row waits that long. And
# the pod's solicitation leaves up to a second after link-up (the kernel's linkwatch delays
# a carrier change by up to 1 s before addrconf sees it). The usual answer comes in
# milliseconds, and DHCPv4 runs meanwhile.
RFC4861_RS_ANSWER = 3.0 + 0.5 + 1.0
# A node that does not listen for RAs on the bridge cannot tell whether the LAN sends any:
# twice MAX_RA_DELAY_TIME covers an idle router without making an IPv4-only LAN pay 3.5 s.
RA_WAIT = 1.0
# A node that listens and has learned nothing (no autoconfigured address, no RA route):
# the LAN most likely has no RAs (usually less than DHCPv4 took, so nothing).
QUIET_LAN_WAIT = 0.2
# ... and once the agent has seen it learn nothing for this long, certainly none: the
# bridge solicited RAs itself when it came up, every router answers a solicitation within
# RFC4861_RS_ANSWER, and a router that starts later announces itself unsolicited. ADD
# then does not wait at all (an IPv4-only LAN pays nothing for IPv6).
QUIET_LAN_CERTAIN = 10.0
_quiet_since: dict[str, float] = {}  # bridge -> when the agent first saw it learn nothing
# What the node has learned on a bridge is read at most this often: a burst of ADDs asks
# once, not once per pod (two sysctls and three netlink requests); a router that starts
# announcing is seen at most this much later.
LEARNED_TTL = 1.0
_learned: dict[str, tuple[float, float | None]] = {}  # bridge -> (read at, its wait or None)
RTPROT_RA = 9
_POLL = 0.02
# The SLAAC wait rescans at least this often, whatever was announced (a lost announcement
# costs this much, not the rest of the wait).
_RESCAN = 1.0
RTMGRP_IPV6_IFADDR = 0x100
AF_INET6 = socket.AF_INET6
# linux/if_addr.h
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80


def pod_ipv6_sysctls(mode: str, default_route: str) -> tuple[tuple[str, str], ...]:
    """Per-interface IPv6 knobs for the pod, written before its link comes up."""
    if mode == "off":
        return (("disable_ipv6", "1"),)
    # Solicit at once, and again after 1 s rather than RFC 4861's 4 s if no RA came: the
    # first solicitation of a pod on a bridge made moments ago is sometimes not answered,
    # and ADD waits for the RA only seconds (RFC4861_RS_ANSWER).
    knobs = [("router_solicitation_delay", "0"), ("router_solicitation_interval", "1")]
    if default_route != "dhcp":
        # "node": the default goes via the node; "none": no default at all.
        knobs.append(("accept_ra_defrtr", "0"))
    return tuple(knobs)


@dataclass(frozen=True)
class SlaacAddress:
    address: ipaddress.IPv6Interface
    router: ipaddress.IPv6Address | None  # the RA's default router, if the pod took it


# The reads below run on every ADD (and poll while waiting): raw rtnetlink (rtnl.py), a
# few microseconds each where pyroute2 spent ~1-3 ms of CPU per handle and dump.


def _scan(rt: Rtnl, ifname: str) -> tuple[ipaddress.IPv6Interface | None, bool]:
    """(usable SLAAC address, whether DAD still runs: on a SLAAC address, or on the
    link-local address, before which the interface sends no router solicitation)."""
    link = rt.get_link(name=ifname)
    if link is None:
        return None, False
    tentative = False
    for a in rt.addrs(AF_INET6, link.index):
        flags = a.flags
        if a.scope == RT_SCOPE_LINK:
            tentative |= bool(flags & IFA_F_TENTATIVE) and not flags & IFA_F_DADFAILED
            continue
        if a.scope != RT_SCOPE_UNIVERSE:
            continue
        if flags & (IFA_F_PERMANENT | IFA_F_DADFAILED):
            continue  # not autoconfigured, or lost DAD
        if flags & IFA_F_TENTATIVE:
            tentative = True
            continue
        return ipaddress.IPv6Interface(f"{a.address}/{a.prefixlen}"), False
    return None, tentative


def _ra_router(rt: Rtnl, ifname: str) -> ipaddress.IPv6Address | None:
    link = rt.get_link(name=ifname)
    if link is None:
        return None
    for r in rt.routes(AF_INET6, link.index, RT_TABLE_MAIN):
        if r.dst_len == 0 and r.gateway:
            return ipaddress.IPv6Address(r.gateway)
    return None


def ra_wait_for(bridge: str, lan_ras: bool = False) -> float:
    """How long ADD waits for an RA on this bridge's LAN (see RFC4861_RS_ANSWER).
    ``lan_ras``: the uplink had learned from RAs when it was taken over (the bridge may not
    have heard one yet)."""
    if lan_ras:
        return RFC4861_RS_ANSWER
    now = time.monotonic()
    seen = _learned.get(bridge)
    if seen is None or now - seen[0] >= LEARNED_TTL:
        seen = (now, _what_the_node_learned(bridge))
        _learned[bridge] = seen
    if seen[1] is not None:
        return seen[1]
    if now - _quiet_since.setdefault(bridge, now) >= QUIET_LAN_CERTAIN:
        return 0.0
    return QUIET_LAN_WAIT


def _what_the_node_learned(bridge: str) -> float | None:
    """RA_WAIT when the node cannot tell, RFC4861_RS_ANSWER when it learned from RAs on
    ``bridge``, None when it listens and has learned nothing."""
    if read_sysctl(f"net/ipv6/conf/{bridge}/accept_ra") not in ("1", "2"):
        return RA_WAIT  # the node does not listen: it cannot tell
    if read_sysctl(f"net/ipv6/conf/{bridge}/autoconf") == "0":
        return RA_WAIT
    with rtnl_in(None) as rt:
        link = rt.get_link(name=bridge)
        if link is None:
            return RA_WAIT
        learned = any(
            a.scope == RT_SCOPE_UNIVERSE and not a.flags & IFA_F_PERMANENT
            for a in rt.addrs(AF_INET6, link.index)  # autoconfigured, or moved with its lifetime
        ) or any(r.proto == RTPROT_RA for r in rt.routes(AF_INET6, link.index, RT_TABLE_MAIN))
    if learned:
        _quiet_since.pop(bridge, None)
        return RFC4861_RS_ANSWER
    return None


def wait_slaac(
    netns_fd: int, ifname: str, up_at: float, timeout: float, ra_wait: float = RA_WAIT
) -> SlaacAddress | None:
    """The pod's SLAAC address, or None when no RA came within ``ra_wait`` of ``up_at`` (a
    time.monotonic() value) or DAD did not end within ``timeout`` of it."""
    dad_deadline = up_at + timeout
    ra_deadline = min(up_at + ra_wait, dad_deadline)
    changes: PodAddressChanges | None = None
    with rtnl_in(netns_fd) as rt:
        try:
            while True:
                address, tentative = _scan(rt, ifname)
                if address is not None:
                    return SlaacAddress(address, _ra_router(rt, ifname))
                now = time.monotonic()
                if tentative:
                    # DAD (enabledad): the RA wait starts once the addresses are usable.
                    ra_deadline = min(now + ra_wait, dad_deadline)
                if now >= ra_deadline:
                    if tentative:
                        log.warning(
                            "%s: IPv6 DAD did not end within ipam.timeout: IPv4 only", ifname
                        )
                    return None
                if changes is None:
                    # Subscribed only now (most ADDs never wait): what changed before it,
                    # the scan right after sees.
                    changes = PodAddressChanges(netns_fd)
                    continue
                changes.wait(min(ra_deadline - now, _RESCAN))
        finally:
            if changes is not None:
                changes.close()


class PodAddressChanges(Subscription):
    """The pod namespace's IPv6 address announcements (RTMGRP_IPV6_IFADDR): the SLAAC wait
    rescans when one comes instead of every 20 ms (it waits up to seconds on a LAN whose
    routers answer late, and 0.2 s on one that may have none)."""

    def __init__(self, netns_fd: int) -> None:
        super().__init__(RTMGRP_IPV6_IFADDR, netns_fd)
        self._poller = select.poll()  # not select(): fds above 1024 (raised RLIMIT_NOFILE)
        self._poller.register(self.fileno(), select.POLLIN)

    def wait(self, seconds: float) -> None:
        """Until something was announced, or ``seconds``; drains what came."""
        if not self._poller.poll(max(0.0, seconds) * 1000):
            return
        with contextlib.suppress(OSError):  # an overrun: the caller rescans either way
            for _ in self._pending():
                pass


def node_link_local(bridge: str, wait: float = 2.0) -> ipaddress.IPv6Address | None:
    """The node's link-local address on ``bridge`` (the pod's IPv6 gateway in node mode).

    A tentative one will do (the route only names it; the node answers for it once its DAD
    ends, about a second after the bridge got its first port); a bridge that has none yet
    gets ``wait`` seconds to form it. Raw rtnetlink: this runs on every dual-stack ADD,
    where a pyroute2 handle and dump cost ~5 ms of the agent's CPU.
    """
    deadline = time.monotonic() + wait
    while True:
        with rtnl_in(None) as rt:
            link = rt.get_link(name=bridge)
            if link is None:
                return None
            for a in rt.addrs(AF_INET6, link.index):
                if a.scope == RT_SCOPE_LINK and a.address and not a.flags & IFA_F_DADFAILED:
                    return ipaddress.IPv6Address(a.address)
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL)


def keep_node_ras(bridge: str) -> None:
    """Before IPv6 forwarding goes on: the bridge keeps accepting RAs (``accept_ra=2``).

    Other interfaces that accept RAs with 1 would stop doing so: they are named in a
    warning, not changed (the node's LAN interface is the bridge).
    """
    if read_sysctl(f"net/ipv6/conf/{bridge}/accept_ra") == "1":
        write_sysctl(f"net/ipv6/conf/{bridge}/accept_ra", "2")
        log.info("set net.ipv6.conf.%s.accept_ra=2: the node keeps its RAs when forwarding", bridge)
    if read_sysctl("net/ipv6/conf/all/forwarding") == "1":
        return
    others = []
    for name in sorted(os.listdir(PROC_SYS / "net/ipv6/conf")):
        if name in (bridge, "all", "default", "lo") or name.startswith("veth"):
            continue  # pods' host ends need no RAs
        if read_sysctl(f"net/ipv6/conf/{name}/accept_ra") == "1":
            others.append(name)
    if others:
        log.warning(
            "IPv6 forwarding goes on for pods: %s stop accepting router advertisements "
            "(set their accept_ra=2 to keep them)",
            ", ".join(others),
        )
