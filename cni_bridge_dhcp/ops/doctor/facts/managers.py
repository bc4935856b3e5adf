"""Network managers' config files below the host root."""

from __future__ import annotations

from pathlib import Path

from .. import checks as dc
from .common import read_text
from .context import Context

MANAGER_SOURCES = (
    ("netplan", "etc/netplan", ("*.yaml", "*.yml")),
    ("netplan", "run/netplan", ("*.yaml", "*.yml")),
    ("networkd", "etc/systemd/network", ("*.network",)),
    ("networkd", "run/systemd/network", ("*.network",)),
    ("nm", "etc/NetworkManager/system-connections", ("*.nmconnection",)),
    ("nm", "run/NetworkManager/system-connections", ("*.nmconnection",)),
    ("ifupdown", "etc/network", ("interfaces",)),
    ("ifupdown", "etc/network/interfaces.d", ("*",)),
)


def gather_manager_configs(root: Path) -> list[dc.ConfigText]:
    configs: list[dc.ConfigText] = []
    for kind, rel, patterns in MANAGER_SOURCES:
        folder = root / rel
        if not folder.is_dir():
            continue
        paths = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
        for path in paths:
            # netplan's generated networkd files are reported through their netplan source
            if kind == "networkd" and path.name.startswith("10-netplan-"):
                continue
            text = read_text(path)
            if text is not None:
                shown = "/" + str(path.relative_to(root))
                configs.append(dc.ConfigText(shown, kind, text))
    return configs


def manager_check(ctx: Context) -> list[dc.Finding]:
    configs = gather_manager_configs(ctx.root)
    return dc.check_network_managers(configs, ctx.uplink, ctx.bridge, ctx.macs.get(ctx.uplink))
