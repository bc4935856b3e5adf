"""The prevResult of a CHECK, validated field by field before anything is compared.

The runtime hands back what it cached, possibly hand-edited or from another plugin: a
wrong type or a bad address is a config error (code 7) naming the field, never a crash.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ...cni.errors import CNIError, ErrorCode


@dataclass(frozen=True)
class PrevInterface:
    name: str
    mac: str
    sandbox: str


@dataclass(frozen=True)
class PrevResult:
    interfaces: tuple[PrevInterface, ...]
    ips: tuple[str, ...]  # "address/prefix", normalised
    routes: tuple[tuple[str, str | None], ...]  # (dst network, gw), normalised


def _bad(field: str, value: object, want: str) -> CNIError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CNIError(
        ErrorCode.INVALID_CONFIG,
        f"prevResult{field} {shown} is not {want}",
        "CHECK compares the pod with the result of its ADD; pass that result unchanged",
    )


def _list(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(field, value, "a list")
    return value


def _obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, value, "an object")
    return value


def _opt_str(obj: dict[str, Any], key: str, field: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{field}.{key}", value, "a string")
    return value


def parse_prev_result(prev: object) -> PrevResult:
    top = _obj(prev, "")
    interfaces: list[PrevInterface] = []
    for n, raw in enumerate(_list(top.get("interfaces"), ".interfaces")):
        field = f".interfaces[{n}]"
        iface = _obj(raw, field)
        interfaces.append(
            PrevInterface(
                name=_opt_str(iface, "name", field),
                mac=_opt_str(iface, "mac", field),
                sandbox=_opt_str(iface, "sandbox", field),
            )
        )
    ips: list[str] = []
    for n, raw in enumerate(_list(top.get("ips"), ".ips")):
        field = f".ips[{n}]"
        ip = _obj(raw, field)
        address = ip.get("address")
        try:
            if not isinstance(address, str):
                raise ValueError
            ips.append(str(ipaddress.ip_interface(address)))
        except ValueError:
            raise _bad(f"{field}.address", address, "an IP address with a prefix") from None
        gateway = ip.get("gateway")
        if gateway is not None:
            try:
                if not isinstance(gateway, str):
                    raise ValueError
                ipaddress.ip_address(gateway)
            except ValueError:
                raise _bad(f"{field}.gateway", gateway, "an IP address") from None
        index = ip.get("interface")
        if index is not None and (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(interfaces)
        ):
            raise _bad(
                f"{field}.interface", index, f"an index into interfaces (0-{len(interfaces) - 1})"
            )
    routes: list[tuple[str, str | None]] = []
    for n, raw in enumerate(_list(top.get("routes"), ".routes")):
        field = f".routes[{n}]"
        route = _obj(raw, field)
        dst = route.get("dst")
        try:
            if not isinstance(dst, str):
                raise ValueError
            network = str(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            raise _bad(f"{field}.dst", dst, "an IP network") from None
        gw = route.get("gw")
        if gw is not None:
            try:
                if not isinstance(gw, str):
                    raise ValueError
                gw = str(ipaddress.ip_address(gw))
            except ValueError:
                raise _bad(f"{field}.gw", gw, "an IP address") from None
        routes.append((network, gw))
    return PrevResult(tuple(interfaces), tuple(ips), tuple(routes))
