"""Who a pod is, as far as the LAN can tell: its MAC, DHCP client id and hostname."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..cni.errors import CNIError, ErrorCode
from .config import NetConf

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
KNOWN_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
        "MAC",
    }
)

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


def check_args(conf: NetConf, args: Mapping[str, str]) -> None:
    """Refuse unknown CNI_ARGS keys unless IgnoreUnknown is set, like the reference."""
    if args.get("IgnoreUnknown", "").lower() in ("1", "true"):
        return
    known = set(KNOWN_ARGS)
    if conf.ipam is not None:
        known.update(p.from_arg for p in conf.ipam.provide if p.from_arg)
    for key in args:
        if key not in known:
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD,
                f"CNI_ARGS: unknown key {key!r}",
                "set IgnoreUnknown=1 in CNI_ARGS to ignore keys this plugin does not use",
            )


def choose_mac(conf: NetConf, args: Mapping[str, str]) -> str | None:
    """runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC (None: kernel or stableMac decides)."""
    for source, mac in (
        ("runtimeConfig.mac", conf.runtime_config.mac),
        ("args.cni.mac", conf.args_mac),
        ("CNI_ARGS MAC", args.get("MAC")),
    ):
        if mac:
            if not _MAC.match(mac):
                raise CNIError(ErrorCode.INVALID_CONFIG, f"{source} {mac!r} is not a MAC address")
            first = int(mac[:2], 16)
            if first & 1:
                raise CNIError(
                    ErrorCode.INVALID_CONFIG, f"{source} {mac!r} is a multicast MAC address"
                )
            return mac.lower()
    return None


def dns_label(name: str | None) -> str | None:
    """A pod name as a valid DNS label for option 12, or None."""
    if not name:
        return None
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or None
