"""The CNI network configs: exactly one of ours, readable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..findings import CNI_CONFIG, Finding, bad, ok


@dataclass(frozen=True)
class ConfFile:
    name: str
    data: dict[str, Any] | None  # None: unreadable or not JSON
    error: str = ""


CONF_SUFFIXES = (".conf", ".conflist", ".json")


def our_plugin(conf: Mapping[str, Any]) -> dict[str, Any] | None:
    """Our plugin's entry in a .conf or .conflist document, if any."""
    plugins = conf.get("plugins") if "plugins" in conf else [conf]
    if not isinstance(plugins, list):
        return None
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("type") == "cni-bridge-dhcp":
            return plugin
    return None


def check_cni_config(conf_dir: str, files: Sequence[ConfFile]) -> Finding:
    candidates = sorted((f for f in files if f.name.endswith(CONF_SUFFIXES)), key=lambda f: f.name)
    ours = [f for f in candidates if f.data is not None and our_plugin(f.data) is not None]
    broken = [f for f in candidates if f.data is None]
    if not ours:
        seen = ", ".join(f.name for f in candidates) or "no network config at all"
        problems = f"no network config in {conf_dir} uses cni-bridge-dhcp ({seen})"
        if broken:
            problems += "; unreadable: " + ", ".join(f"{f.name} ({f.error})" for f in broken)
        return bad(
            CNI_CONFIG,
            problems,
            "The DaemonSet's install container writes it (check its logs); by hand, copy "
            f"examples/10-cni-bridge-dhcp.conflist to {conf_dir}/ and adjust bridge and "
            "uplinkInterface.",
        )
    first = candidates[0]
    if first.name != ours[0].name:
        what = "unreadable" if first.data is None else f"network {first.data.get('name')!r}"
        return bad(
            CNI_CONFIG,
            f"the container runtime uses the first config in {conf_dir}, {first.name} "
            f"({what}), not {ours[0].name}",
            f"Remove or rename {first.name} (e.g. an old flannel/bridge config), or give ours "
            f"a name that sorts first (e.g. 00-cni-bridge-dhcp.conflist); then restart the "
            "container runtime so it reloads the config.",
        )
    return ok(CNI_CONFIG, f"{conf_dir}/{ours[0].name} is the active network config")
