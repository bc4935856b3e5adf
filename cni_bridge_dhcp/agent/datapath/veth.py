"""Per-pod veth pairs: created inside the pod namespace, host end moved to the node.

Creating the pair inside the pod namespace means the pod-side name (CNI_IFNAME) never
clashes with a node interface; the host end gets a random ``veth`` name.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass

from ...cni.errors import CNIError, ErrorCode
from .netlink import EEXIST, netns_ipr
from .netns import own_netns_fd, run_in_netns
from .rtnl import Link, Rtnl, RtnlError, new_socket, rtnl_in
from .sysctl import write_sysctl_if_present

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VethSpec:
    ifname: str
    bridge_index: int
    mac: str | None = None
    mtu: int | None = None
    # The host end's MTU: the bridge's. A smaller one would make the kernel lower a bridge
    # whose MTU was never pinned (a pre-configured one) to the new port's on enslaving.
    host_mtu: int | None = None
    hairpin: bool = False
    isolated: bool = False
    enable_dad: bool = False
    bring_up: bool = True
    # net/ipv6/conf/<ifname>/<key> = value, written before the link comes up (SLAAC).
    ipv6_sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VethInfo:
    host_name: str
    host_index: int
    host_mac: str
    pod_name: str
    pod_index: int
    pod_mac: str
    mtu: int


def new_host_name() -> str:
    return f"veth{secrets.token_hex(4)}"


def _pod_sysctls(ifname: str, enable_dad: bool, ipv6: tuple[tuple[str, str], ...] = ()) -> None:
    # Announce the (new) MAC on address changes so LAN neighbours update their caches.
    write_sysctl_if_present(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    # The node forwards pod traffic back out of the same bridge; an ICMP redirect would
    # teach the pod to bypass the node (and its conntrack), so the pod ignores them.
    write_sysctl_if_present(f"net/ipv4/conf/{ifname}/accept_redirects", "0")
    write_sysctl_if_present("net/ipv4/conf/all/accept_redirects", "0")
    if enable_dad:
        # enabledad, as the reference: DAD (and enhanced DAD) on for the pod's addresses.
        write_sysctl_if_present(f"net/ipv6/conf/{ifname}/enhanced_dad", "1")
        write_sysctl_if_present(f"net/ipv6/conf/{ifname}/accept_dad", "1")
    else:
        # As the reference plugin: skip IPv6 DAD so addresses are usable at once.
        write_sysctl_if_present(f"net/ipv6/conf/{ifname}/accept_dad", "0")
    for key, value in ipv6:
        write_sysctl_if_present(f"net/ipv6/conf/{ifname}/{key}", value)


def setup_veth(netns_fd: int, spec: VethSpec, host_name: str) -> VethInfo:
    """Create the pair; on any failure nothing of it remains.

    Raw rtnetlink (rtnl.py): one socket per side and nine small requests, where pyroute2
    spent ~7 ms of CPU per ADD on its handles and request processing."""
    with rtnl_in(netns_fd) as pod, Rtnl() as node:
        if pod.get_link(name=spec.ifname) is not None:
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"interface {spec.ifname!r} already exists in the container's network namespace",
                "CNI_IFNAME must name an interface that does not exist yet",
            )
        try:
            pod.add_veth(
                spec.ifname,
                host_name,
                own_netns_fd(),
                mtu=spec.mtu,
                peer_mtu=spec.host_mtu or spec.mtu,
                address=spec.mac,
            )
        except RtnlError as exc:
            if exc.errno == EEXIST:
                raise CNIError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"host interface name {host_name} is taken; retry",
                ) from None
            raise CNIError(
                ErrorCode.IO_FAILURE, f"creating veth {spec.ifname}/{host_name} failed: {exc}"
            ) from None
        try:
            return _finish(pod, node, netns_fd, spec, host_name)
        except BaseException:
            with contextlib.suppress(RtnlError):
                link = pod.get_link(name=spec.ifname)
                if link is not None:
                    pod.del_link(link.index)
            raise


def kwargs_peer(spec: VethSpec) -> dict[str, object]:
    mtu = spec.host_mtu or spec.mtu
    return {"mtu": mtu} if mtu else {}


def _found(link: Link | None, what: str) -> Link:
    if link is None:
        raise CNIError(ErrorCode.IO_FAILURE, f"{what} vanished while it was being set up")
    return link


def _finish(pod: Rtnl, node: Rtnl, netns_fd: int, spec: VethSpec, host_name: str) -> VethInfo:
    # Read once: enslaving and bringing up change neither end's MAC nor MTU.
    host_link = _found(node.get_link(name=host_name), f"host veth {host_name}")
    pod_link = _found(pod.get_link(name=spec.ifname), f"pod interface {spec.ifname}")
    host_index, pod_index = host_link.index, pod_link.index
    node.set_link(host_index, up=True, master=spec.bridge_index)
    if spec.hairpin or spec.isolated:
        port: dict[str, int] = {}
        if spec.hairpin:
            port["mode"] = 1
        if spec.isolated:
            port["isolated"] = 1
        with netns_ipr(None) as ipr:  # bridge port flags: rare, left to pyroute2
            ipr.brport("set", index=host_index, **port)
    run_in_netns(netns_fd, lambda: _pod_sysctls(spec.ifname, spec.enable_dad, spec.ipv6_sysctls))
    if spec.bring_up:
        pod.set_link(pod_index, up=True)
    return VethInfo(
        host_name=host_name,
        host_index=host_index,
        host_mac=host_link.address or "",
        pod_name=spec.ifname,
        pod_index=pod_index,
        pod_mac=pod_link.address or "",
        mtu=int(pod_link.mtu or 0),
    )


def delete_pod_link(netns_fd: int | None, ifname: str, host_name: str | None) -> bool:
    """Delete the pair from whichever side still exists; missing is success.

    Raw rtnetlink (rtnl.py): two small requests per side instead of two pyroute2 handles
    and their requests, most of the agent's CPU per DEL besides the kernel's own work."""
    deleted = False
    if netns_fd is not None:
        with Rtnl(run_in_netns(netns_fd, new_socket)) as pod:
            link = pod.get_link(name=ifname)
            if link is not None:
                with contextlib.suppress(RtnlError):
                    deleted = pod.del_link(link.index)
    if host_name:
        with Rtnl() as node:
            link = node.get_link(name=host_name)
            if link is not None and node.del_link(link.index):
                deleted = True
    return deleted


def host_veth_state(host_name: str) -> tuple[bool, int | None]:
    """(exists, master ifindex) of a host-side veth."""
    with netns_ipr(None) as node:
        found = node.link_lookup(ifname=host_name)
        if not found:
            return False, None
        link = node.get_links(found[0])[0]
        return True, link.get("master")
