"""Stable DHCP identities for pods: client identifier (option 61), hostname, MAC.

A pod sandbox that is recreated keeps its Kubernetes namespace/name, network and ifname,
so everything derived from those asks the server for the same lease. Without Kubernetes
identity the container id is the best we have (it changes with every sandbox).
"""

from __future__ import annotations

import hashlib
import re

from ...cni.errors import CNIError, ErrorCode

_CLIENT_ID_TYPE = b"\x00"  # RFC 2132 9.14: type 0, an identifier that is not a hardware address
_MAX_READABLE = 128


def _identity(
    pod_namespace: str | None,
    pod_name: str | None,
    container_id: str,
    network: str,
    ifname: str,
    per_sandbox: bool = False,
) -> str:
    # network and ifname stay in the K8S identity: one pod may have several attachments
    # leased from the same server (multus), and each needs its own lease.
    if pod_namespace and pod_name:
        ident = f"k8s:{pod_namespace}/{pod_name}/{network}/{ifname}"
        # Two live sandboxes of one pod (a re-created pod whose old sandbox is not torn
        # down yet) must be two clients to the server: the later one adds its sandbox id.
        return f"{ident}@{container_id}" if per_sandbox else ident
    return f"cni:{container_id}/{network}/{ifname}"


def client_id_for(
    pod_namespace: str | None,
    pod_name: str | None,
    container_id: str,
    network: str,
    ifname: str,
    *,
    per_sandbox: bool = False,
) -> bytes:
    """Option 61 value: type 0 + the pod's stable identity (hashed when it is long).

    ``per_sandbox``: the identity of this sandbox only (the container id added), for when
    the pod's usual identity is held by another live attachment.
    """
    ident = _identity(pod_namespace, pod_name, container_id, network, ifname, per_sandbox)
    ident_b = ident.encode()
    if len(ident_b) > _MAX_READABLE:
        ident_b = b"sha256:" + hashlib.sha256(ident_b).hexdigest()[:48].encode()
    return _CLIENT_ID_TYPE + ident_b


def stable_mac_for(
    pod_namespace: str | None,
    pod_name: str | None,
    container_id: str,
    network: str,
    ifname: str,
    *,
    per_sandbox: bool = False,
) -> str:
    """A locally administered unicast MAC derived from the same identity (ipam.stableMac)."""
    ident = _identity(pod_namespace, pod_name, container_id, network, ifname, per_sandbox).encode()
    raw = bytearray(hashlib.sha256(b"mac:" + ident).digest()[:6])
    raw[0] = (raw[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in raw)


# ipam.clientId: what option 61 the pod's DHCP messages carry.
CLIENT_ID_MODES = ("pod", "mac", "none")
_HW_TYPE_ETHERNET = b"\x01"  # RFC 2132 9.14: type 1 + the hardware address


def wire_client_id(mode: str, pod_client_id: bytes, mac: str) -> bytes:
    """Option 61 for ``mode``: "pod" the pod identity (``client_id_for``); "mac" the RFC 2132
    hardware form 01+MAC, which servers keying reservations by client id match (networkd);
    "none" b"" (no option 61: the server keys the lease and reservations by chaddr)."""
    if mode == "pod":
        return pod_client_id
    if mode == "mac":
        return _HW_TYPE_ETHERNET + bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if mode == "none":
        return b""
    raise ValueError(f"ipam.clientId {mode!r} is not one of {', '.join(CLIENT_ID_MODES)}")


# Reference `dhcp` IPAM option names (ipam.request / ipam.provide) and their codes.
OPTION_CODES: dict[str, int] = {
    "subnet-mask": 1,
    "routers": 3,
    "router": 3,
    "domain-name-servers": 6,
    "dns-server": 6,
    "host-name": 12,
    "hostname": 12,
    "domain-name": 15,
    "interface-mtu": 26,
    "broadcast-address": 28,
    "static-routes": 33,
    "ntp-servers": 42,
    "vendor-class-identifier": 60,
    "dhcp-client-identifier": 61,
    "client-id": 61,
    "domain-search": 119,
    "classless-static-routes": 121,
    "classless-route": 121,
}


def option_code(name: str, key: str) -> int:
    if name.isdigit() and 1 <= int(name) <= 254:
        return int(name)
    code = OPTION_CODES.get(name.lower())
    if code is None:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"{key}: unknown DHCP option {name!r}")
    return code


def dns_label(name: str | None) -> str | None:
    """A pod name as a valid DNS label for option 12, or None."""
    if not name:
        return None
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or None
