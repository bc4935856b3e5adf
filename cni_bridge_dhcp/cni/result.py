"""One internal result shape (CNI 1.1.0) and conversion to the version the runtime asked for.

Standard library only. Results are plain JSON dicts: the agent builds them in the 1.1.0
shape; the plugin converts them at the output edge. prevResults arrive in the config's
version and are normalised upward with ``to_internal``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: VERSION imports this module and not typing (~1 ms)
if TYPE_CHECKING:
    from typing import Any

    JSON = dict[str, Any]

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"

# Keys each version knows; anything else is dropped on the way down.
_IFACE_KEYS = {
    "1.1.0": ("name", "mac", "mtu", "sandbox", "socketPath", "pciID"),
    "1.0.0": ("name", "mac", "sandbox"),
    "0.4.0": ("name", "mac", "sandbox"),
}
_ROUTE_KEYS = {
    "1.1.0": ("dst", "gw", "mtu", "advmss", "priority", "table", "scope"),
    "1.0.0": ("dst", "gw"),
    "0.4.0": ("dst", "gw"),
}
_DNS_KEYS = ("nameservers", "domain", "search", "options")


def version_tuple(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def is_supported(version: str) -> bool:
    return version in SUPPORTED_VERSIONS


def _key_set(table: dict[str, tuple[str, ...]], version: str) -> tuple[str, ...]:
    if version in table:
        return table[version]
    return table["0.4.0"]  # 0.3.0 and 0.3.1 share the 0.4.0 shape


def _prune(obj: JSON, keys: tuple[str, ...]) -> JSON:
    return {k: obj[k] for k in keys if k in obj and obj[k] not in (None, "", [], {})}


def _ip_version(address: str) -> str:
    return "6" if ":" in address else "4"


def convert(result: JSON, version: str) -> JSON:
    """Render an internal (1.1.0) result in ``version``'s shape."""
    if not is_supported(version):
        raise ValueError(f"unsupported result version {version!r}")
    legacy = version_tuple(version) < (1, 0, 0)
    out: JSON = {"cniVersion": version}
    ifaces = [_prune(i, _key_set(_IFACE_KEYS, version)) for i in result.get("interfaces", [])]
    if ifaces:
        out["interfaces"] = ifaces
    ips: list[JSON] = []
    for ip in result.get("ips", []):
        entry: JSON = {}
        if legacy:
            entry["version"] = _ip_version(ip["address"])
        for key in ("interface", "address", "gateway"):
            if key in ip and ip[key] is not None:
                entry[key] = ip[key]
        ips.append(entry)
    if ips:
        out["ips"] = ips
    routes = [_prune(r, _key_set(_ROUTE_KEYS, version)) for r in result.get("routes", [])]
    if routes:
        out["routes"] = routes
    dns = _prune(result.get("dns") or {}, _DNS_KEYS)
    if dns or legacy:
        # Pre-1.0 results always carried a dns object; 1.0+ omit an empty one.
        out["dns"] = dns
    return out


def to_internal(result: JSON) -> JSON:
    """Normalise a prevResult of any supported version into the internal shape."""
    import copy  # agent side only (prevResult): the plugin's exec path never needs it

    res = copy.deepcopy(result)
    res["cniVersion"] = LATEST
    for ip in res.get("ips", []) or []:
        ip.pop("version", None)
    return res
