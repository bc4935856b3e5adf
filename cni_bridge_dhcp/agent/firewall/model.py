"""What a pod asks of the firewall, the backend protocol, and the names we derive.

Every chain and comment the plugin creates is derived from (network, container id, ifname)
or from the bridge name, so DEL, GC and CHECK find exactly what ADD made and nothing else.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

COMMENT_PREFIX = "cni-bridge-dhcp:"
CHAIN_PREFIX = "CBD-"
FORWARD_CHAIN = "CBD-FORWARD"  # our shared chain in every filter table we write to
FORWARD_COMMENT = f"{COMMENT_PREFIX} forward"
OWN_TABLE = (
    "cni-bridge-dhcp"  # nftables: `table inet cni-bridge-dhcp`, `table bridge cni-bridge-dhcp`
)
NFT_COMMENT_MAX = 127  # libnftnl caps rule comments at 128 bytes including the NUL


@dataclass(frozen=True)
class PodRules:
    """Everything the firewall needs to know about one attachment."""

    network: str
    container_id: str
    ifname: str
    bridge: str
    host_veth: str
    mac: str
    ips: tuple[IPInterface, ...]
    ip_masq: bool
    macspoofchk: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    @property
    def chain(self) -> str:
        return pod_chain(self.network, self.container_id, self.ifname)

    @property
    def comment(self) -> str:
        return pod_comment(self.network, self.container_id, self.ifname)


@runtime_checkable
class FirewallBackend(Protocol):
    name: str

    def ensure_bridge(self, bridge: str) -> None: ...
    def remove_bridge(self, bridge: str) -> None: ...
    def add_pod(self, pod: PodRules) -> None: ...
    def del_pod(self, network: str, container_id: str, ifname: str) -> None: ...
    def check_pod(self, pod: PodRules) -> list[str]: ...
    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]: ...
    def pods(self, network: str) -> set[tuple[str, str]]: ...
    # Like ensure_bridge/add_pod, but say what had to be (re)created.
    def restore_bridge(self, bridge: str) -> list[str]: ...
    def restore_pod(self, pod: PodRules) -> list[str]: ...


def pod_chain(network: str, container_id: str, ifname: str) -> str:
    """``CBD-`` + 10 hex digits: short enough for iptables' 28-character chain names."""
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()
    return CHAIN_PREFIX + digest[:10].upper()


def _network_token(network: str, container_id: str, ifname: str) -> str:
    """The network as written in comments, shortened so the comment fits nftables' limit."""
    room = NFT_COMMENT_MAX - len(f"{COMMENT_PREFIX}   ") - len(container_id) - len(ifname)
    if len(network.encode()) <= room:
        return network
    digest = hashlib.sha256(network.encode()).hexdigest()[:8]
    keep = max(room - 9, 1)
    return network.encode()[:keep].decode(errors="ignore") + "~" + digest


def pod_comment(network: str, container_id: str, ifname: str) -> str:
    token = _network_token(network, container_id, ifname)
    return f"{COMMENT_PREFIX} {token} {container_id} {ifname}"


def parse_pod_comment(comment: str | None) -> tuple[str, str, str] | None:
    """(network token, container id, ifname) of a pod comment, None for anything else."""
    if not comment or not comment.startswith(COMMENT_PREFIX + " "):
        return None
    parts = comment[len(COMMENT_PREFIX) + 1 :].split(" ")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def comment_matches_network(comment: str | None, network: str) -> tuple[str, str] | None:
    """(container id, ifname) if ``comment`` is a pod comment of ``network``."""
    parsed = parse_pod_comment(comment)
    if parsed is None:
        return None
    token, cid, ifname = parsed
    if token != _network_token(network, cid, ifname):
        return None
    return cid, ifname


def bridge_comment(bridge: str) -> str:
    return f"{COMMENT_PREFIX} bridge {bridge}"


def is_ours(comment: str | None) -> bool:
    return bool(comment) and str(comment).startswith(COMMENT_PREFIX)


def short(comment: str | None) -> str:
    """A comment without our prefix, for human-readable rule names."""
    if comment and comment.startswith(COMMENT_PREFIX):
        return comment[len(COMMENT_PREFIX) :].strip()
    return comment or "(no comment)"
