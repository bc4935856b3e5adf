"""Network managers (netplan, networkd, NetworkManager, ifupdown) that would take the uplink back."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..findings import NET_MANAGER, Finding, bad, ok
from ..textconf import Ini, load_yaml, read_ini


@dataclass(frozen=True)
class ConfigText:
    path: str  # as shown to the user
    kind: str  # "netplan", "networkd", "nm", "ifupdown"
    text: str


def _names_match(patterns: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns.split())


def _addressing_words(entry: Mapping[str, Any]) -> list[str]:
    words = []
    for key in ("dhcp4", "dhcp6"):
        if entry.get(key) is True:
            words.append(f"{key}: true")
    for key in ("addresses", "gateway4", "gateway6", "routes"):
        if entry.get(key):
            words.append(key)
    return words


def netplan_snippet(uplink: str, bridge: str, dhcp: bool, mac: str | None) -> str:
    addressing = "dhcp4: true" if dhcp else "addresses: [<the node's address>/<prefix>]"
    mac_line = f"\n      macaddress: {mac}" if mac else ""
    return (
        "network:\n  version: 2\n  ethernets:\n"
        f"    {uplink}:\n      dhcp4: false\n      dhcp6: false\n"
        "  bridges:\n"
        f"    {bridge}:\n      interfaces: [{uplink}]{mac_line}\n      {addressing}\n"
        "      parameters:\n        stp: false\n        forward-delay: 0"
    )


def _netplan(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    try:
        doc = load_yaml(cfg.text)
    except ValueError as exc:
        if re.search(rf"(^|\W){re.escape(uplink)}(\W|$)", cfg.text):
            return [
                (
                    f"{cfg.path} mentions {uplink} (not parsed: {exc})",
                    f"Make netplan configure the bridge instead:\n{netplan_snippet(uplink, bridge, True, mac)}",
                )
            ]
        return []
    net = doc.get("network") if isinstance(doc, dict) else None
    if not isinstance(net, dict):
        return []
    ethernets = net.get("ethernets") or {}
    bridges = net.get("bridges") or {}
    if not isinstance(ethernets, dict) or not isinstance(bridges, dict):
        return []
    ids = []
    for key, entry in ethernets.items():
        entry = entry if isinstance(entry, dict) else {}
        match = entry.get("match") if isinstance(entry.get("match"), dict) else None
        if (
            key == uplink
            or (
                match and isinstance(match.get("name"), str) and _names_match(match["name"], uplink)
            )
            or (match and mac and str(match.get("macaddress", "")).lower() == mac.lower())
        ):
            ids.append((key, entry))
    out: list[tuple[str, str]] = []
    for key, entry in ids:
        in_bridges = [
            name
            for name, br in bridges.items()
            if isinstance(br, dict) and key in (br.get("interfaces") or [])
        ]
        if bridge in in_bridges:
            continue
        if in_bridges:
            out.append(
                _other_bridge(
                    cfg.path,
                    uplink,
                    in_bridges[0],
                    bridge,
                    " (and BRIDGE in the DaemonSet's ConfigMap)",
                    f"rename the bridge in {cfg.path}",
                )
            )
            continue
        words = _addressing_words(entry)
        if not words:
            continue
        out.append(
            (
                f"{cfg.path} configures {uplink} itself ({', '.join(words)}): at the next "
                f"`netplan apply`, reboot or DHCP renewal it puts the node's address back on "
                f"{uplink} and fights the plugin's bridge",
                f"Make netplan build the bridge and leave {uplink} bare; replace the {key} "
                f"stanza with:\n{netplan_snippet(uplink, bridge, entry.get('dhcp4') is True, mac)}\n"
                "then `netplan generate` (apply it at a quiet moment: the agent accepts a "
                "pre-configured bridge as is).",
            )
        )
    return out


def networkd_snippet(uplink: str, bridge: str, dhcp: bool, mac: str | None) -> str:
    addressing = "DHCP=ipv4" if dhcp else "Address=<the node's address>/<prefix>\nGateway=<gateway>"
    mac_line = f"\nMACAddress={mac}" if mac else ""
    return (
        f"# /etc/systemd/network/10-{bridge}.netdev\n[NetDev]\nName={bridge}\nKind=bridge"
        f"{mac_line}\n[Bridge]\nSTP=no\nForwardDelaySec=0\n\n"
        f"# /etc/systemd/network/10-{uplink}.network\n[Match]\nName={uplink}\n[Network]\n"
        f"Bridge={bridge}\n\n"
        f"# /etc/systemd/network/10-{bridge}.network\n[Match]\nName={bridge}\n[Network]\n"
        f"{addressing}"
    )


def _last(ini: Ini, section: str) -> dict[str, str]:
    """A section's keys with their last value (where a repeated key overrides)."""
    return {k: v[-1] for k, v in ini.get(section, {}).items() if v}


def _other_bridge(
    path: str, uplink: str, other: str, bridge: str, also: str, or_else: str
) -> tuple[str, str]:
    """The uplink is bridged, but into a bridge with another name than the plugin's."""
    return (
        f"{path} bridges {uplink} into {other!r}, but the plugin uses {bridge!r}",
        f'Set "bridge": "{other}" in the network config{also}, or {or_else} to {bridge}.',
    )


def _networkd(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    ini = read_ini(cfg.text)
    match = ini.get("Match", {})
    names = match.get("Name", [])
    macs = [v.lower() for k in ("MACAddress", "PermanentMACAddress") for v in match.get(k, [])]
    matched = any(_names_match(n, uplink) for n in names) or bool(
        mac and mac.lower() in " ".join(macs)
    )
    if not matched:
        return []
    network = _last(ini, "Network")
    if network.get("Bridge") == bridge:
        return []
    if network.get("Bridge"):
        return [
            _other_bridge(
                cfg.path, uplink, network["Bridge"], bridge, "", f"change Bridge= in {cfg.path}"
            )
        ]
    addressing = [
        k
        for s in ("Network", "Address", "Route")
        for k in ini.get(s, {})
        if k in ("DHCP", "Address", "Gateway")
    ]
    if not addressing and not any(s in ("Address", "Route") for s in ini):
        return []
    dhcp = network.get("DHCP", "no").lower() in ("yes", "ipv4", "true", "both")
    return [
        (
            f"{cfg.path} configures {uplink} itself ({', '.join(sorted(set(addressing))) or 'addresses'}): "
            f"systemd-networkd puts the node's address back on {uplink} when it restarts or "
            "the link flaps, and fights the plugin's bridge",
            f"Make networkd build the bridge and enslave {uplink} (replace {cfg.path}):\n"
            f"{networkd_snippet(uplink, bridge, dhcp, mac)}\nthen `networkctl reload` at a quiet moment.",
        )
    ]


def nm_snippet(uplink: str, bridge: str) -> str:
    return (
        f"nmcli con add type bridge ifname {bridge} con-name {bridge} bridge.stp no "
        f"bridge.forward-delay 0 ipv4.method auto\n"
        f"nmcli con add type bridge-slave ifname {uplink} master {bridge}\n"
        f"nmcli con up {bridge}"
    )


def _nm(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    ini = read_ini(cfg.text)
    conn = _last(ini, "connection")
    eth_mac = next(iter(ini.get("ethernet", {}).get("mac-address", [])), "")
    if conn.get("interface-name") != uplink and not (mac and eth_mac.lower() == mac.lower()):
        return []
    master = conn.get("master") or conn.get("controller")
    port_type = conn.get("slave-type") or conn.get("port-type")
    if master and port_type == "bridge":
        return []  # a port of an NM bridge: the bridge check decides whether it is ours
    methods = {s: _last(ini, s)["method"] for s in ("ipv4", "ipv6") if "method" in _last(ini, s)}
    if methods.get("ipv4", "auto") == "disabled" and methods.get("ipv6", "auto") in (
        "disabled",
        "ignore",
    ):
        return []
    name = conn.get("id", cfg.path)
    return [
        (
            f"{cfg.path} (NetworkManager connection {name!r}) configures {uplink} itself "
            f"(ipv4.method {methods.get('ipv4', 'auto')}): NetworkManager re-activates it and "
            f"fights the plugin's bridge",
            "Let NetworkManager own the bridge and enslave the uplink:\n"
            f"{nm_snippet(uplink, bridge)}\nnmcli con delete {name!r}   # the old profile\n"
            "Or make NetworkManager leave both alone: /etc/NetworkManager/conf.d/99-cni-bridge-dhcp.conf\n"
            f"[keyfile]\nunmanaged-devices=interface-name:{uplink};interface-name:{bridge};interface-name:veth*",
        )
    ]


def _ifupdown(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    stanzas: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in cfg.text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "iface" and len(words) >= 4:
            current = words[1]
            stanzas[current] = (words[3], [])
        elif words[0] in ("auto", "allow-hotplug", "source", "source-directory", "mapping"):
            current = ""
        elif current:
            stanzas[current][1].append(" ".join(words))
    if uplink not in stanzas:
        return []
    for name, (_, opts) in stanzas.items():
        for opt in opts:
            key, _, value = opt.partition(" ")
            if (
                key in ("bridge_ports", "bridge-ports")
                and uplink in value.split()
                and name == bridge
            ):
                return []
    method = stanzas[uplink][0]
    if method in ("manual",):
        return []
    return [
        (
            f"{cfg.path} configures {uplink} itself (inet {method}): ifup/ifdown and the DHCP "
            "client it starts put the node's address back on it",
            f"Replace the {uplink} stanza with:\niface {uplink} inet manual\n\nauto {bridge}\n"
            f"iface {bridge} inet {method}\n    bridge_ports {uplink}\n    bridge_stp off\n"
            "    bridge_fd 0",
        )
    ]


_MANAGER_PARSERS = {"netplan": _netplan, "networkd": _networkd, "nm": _nm, "ifupdown": _ifupdown}


def check_network_managers(
    configs: Sequence[ConfigText], uplink: str, bridge: str, uplink_mac: str | None
) -> list[Finding]:
    findings = [
        bad(NET_MANAGER, problem, fix)
        for cfg in configs
        for problem, fix in _MANAGER_PARSERS[cfg.kind](cfg, uplink, bridge, uplink_mac)
    ]
    if not findings:
        findings.append(
            ok(NET_MANAGER, f"{len(configs)} network config file(s) read; none manages {uplink}")
        )
    return findings
