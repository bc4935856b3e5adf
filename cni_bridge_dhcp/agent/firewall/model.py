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
# skb mark bit for frames that entered the bridge from an isolated pod's port (portIsolation):
# the node must not route them to another isolated port. Clear of kube-proxy's 0x4000/0x8000
# and Calico's upper 16 bits.
ISOLATION_MARK = 0x2000
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
    isolated: bool = False  # portIsolation: no routed traffic to other isolated ports either

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


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def encode_token(text: str) -> str:
    """``text`` as written in a comment: itself if made of safe characters, else ``%`` + hex.

    Comments must survive every tool's quoting (iptables-save escapes ``'``, ``"`` and
    ``\\``; python-iptables re-parses that with shlex; nft has its own rules), so a name
    with anything else (an ifname like ``a'b`` or ``é0``) is written as the hex of its
    UTF-8 bytes. ``%`` is not a safe character, so the two forms never collide.
    """
    if text and all(c in _SAFE for c in text):
        return text
    return "%" + text.encode("utf-8", "surrogateescape").hex()


def decode_token(token: str) -> str | None:
    if not token.startswith("%"):
        return token if all(c in _SAFE for c in token) else None
    try:
        return bytes.fromhex(token[1:]).decode("utf-8", "surrogateescape")
    except ValueError:
        return None


def _shorten(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    keep = max(room - 9, 1)
    return text[:keep] + "~" + digest


def _network_token(network: str, container_id: str, ifname: str) -> str:
    """The network as written in comments, shortened so the comment fits nftables' limit."""
    cid, ifn = encode_token(container_id), encode_token(ifname)
    room = NFT_COMMENT_MAX - len(f"{COMMENT_PREFIX}   ") - len(cid) - len(ifn)
    return _shorten(encode_token(network), room)


def _legacy_network_token(network: str, container_id: str, ifname: str) -> str:
    """The network token of rules written before names were encoded (upgrades find them)."""
    room = NFT_COMMENT_MAX - len(f"{COMMENT_PREFIX}   ") - len(container_id) - len(ifname)
    if len(network.encode()) <= room:
        return network
    digest = hashlib.sha256(network.encode()).hexdigest()[:8]
    keep = max(room - 9, 1)
    return network.encode()[:keep].decode(errors="ignore") + "~" + digest


def pod_comment(network: str, container_id: str, ifname: str) -> str:
    """Only safe characters: the comment reads back exactly as written, with every tool."""
    token = _network_token(network, container_id, ifname)
    return f"{COMMENT_PREFIX} {token} {encode_token(container_id)} {encode_token(ifname)}"


def parse_pod_comment(comment: str | None) -> tuple[str, str, str] | None:
    """(network token, container id, ifname token) of a pod comment, None for anything else."""
    if not comment or not comment.startswith(COMMENT_PREFIX + " "):
        return None
    parts = comment[len(COMMENT_PREFIX) + 1 :].split(" ")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _candidates(token: str) -> list[str]:
    """Names a comment token may stand for: encoded (ours), raw (rules written before names
    were encoded), or raw as mangled on the way: python-iptables stores ``a'b`` as
    ``a\\'b``, and iptables-save's escaping read back with shlex adds another backslash
    before each ``'``. The pod's chain name tells which candidate is right."""
    once = token.replace("\\'", "'")
    out: list[str] = []
    for cand in (decode_token(token), token, once, once.replace("\\'", "'")):
        if cand and cand not in out:
            out.append(cand)
    return out


def comment_matches_network(
    comment: str | None, network: str, chain: str | None = None
) -> tuple[str, str] | None:
    """(container id, ifname) if ``comment`` is a pod comment of ``network``.

    With ``chain`` (the rule's jump target), the pod must also own that chain: this settles
    which reading of an old-format comment is the right one.
    """
    parsed = parse_pod_comment(comment)
    if parsed is None:
        return None
    token, cid_token, if_token = parsed
    for cid in _candidates(cid_token):
        for ifname in _candidates(if_token):
            if chain is not None and pod_chain(network, cid, ifname) != chain:
                continue
            known = (
                _network_token(network, cid, ifname),
                _legacy_network_token(network, cid, ifname),
            )
            if token in known:
                return cid, ifname
    return None


def bridge_comment(bridge: str) -> str:
    return f"{COMMENT_PREFIX} bridge {encode_token(bridge)}"


def legacy_bridge_comment(bridge: str) -> str:
    """The bridge comment as written before names were encoded: still recognised."""
    return f"{COMMENT_PREFIX} bridge {bridge}"


def is_ours(comment: str | None) -> bool:
    return bool(comment) and str(comment).startswith(COMMENT_PREFIX)


def short(comment: str | None) -> str:
    """A comment without our prefix, for human-readable rule names."""
    if comment and comment.startswith(COMMENT_PREFIX):
        return comment[len(COMMENT_PREFIX) :].strip()
    return comment or "(no comment)"
