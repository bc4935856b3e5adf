#!/usr/bin/env python3
"""Entrypoint of the cni-bridge-dhcp DaemonSet container: install, then run the agent.

1. validate the settings from the environment (the DaemonSet's ConfigMap); a bad value
   stops here, before anything is written;
2. copy the plugin executable to <root>/opt/cni/bin/cni-bridge-dhcp, then write the
   network config to <root>/etc/cni/net.d/<CONFLIST_NAME>, each atomically (temp file in
   the same directory, fsync, rename): the container runtime never sees a half-written
   file, and the config appears only once the plugin it names is in place;
3. exec the agent. On SIGTERM (pod deleted or updated) the agent exits leaving pods
   running, their leases journaled and the uplink bridged; the next agent adopts them.

Standard library and the package's stdlib-only cni/ (installed in the image). ``--root`` is / inside a plain node, /host in the container (where
the host's directories are mounted); ``--no-exec`` stops after step 2 (a dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The image installs the package next to this entrypoint (deploy/Containerfile); cni/ is
# stdlib only, so this stays a standard-library program.
from cni_bridge_dhcp.cni.defaults import DEFAULT_SOCKET, DEFAULT_STATE_DIR
from cni_bridge_dhcp.cni.names import MAX_IFNAME, ifname_problem

PLUGIN_NAME = "cni-bridge-dhcp"
DEFAULT_PLUGIN_SOURCE = "/opt/cni-bridge-dhcp/cni-bridge-dhcp"  # the zipapp, built into the image
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")

# env name -> (default, meaning); the ConfigMap sets these
SETTINGS: dict[str, tuple[str, str]] = {
    "UPLINK": ("eth0", "the node's LAN interface (a name, or a regex)"),
    "BRIDGE": ("cni0", "the bridge the uplink and pods are plugged into"),
    "NETWORK_NAME": ("lan", "the CNI network name"),
    "CONFLIST_NAME": ("10-cni-bridge-dhcp.conflist", "file name in /etc/cni/net.d"),
    "CNI_VERSION": ("1.0.0", "cniVersion of the conflist"),
    "DEFAULT_ROUTE": ("node", "pods' default route: node, dhcp or none"),
    "FIREWALL_BACKEND": ("auto", "auto, iptables, nftables or none"),
    "IPAM_TIMEOUT": ("30", "seconds to wait for a DHCP lease at ADD"),
    "STABLE_MAC": ("false", "pod MAC derived from namespace/name (same lease on any node)"),
    "MTU": ("", "pod MTU (empty: the uplink's)"),
    "PORTMAP": ("auto", "chain the portmap plugin: auto (if installed), true, false"),
    "AGENT_SOCKET": (DEFAULT_SOCKET, "the agent's unix socket"),
    "STATE_DIR": (DEFAULT_STATE_DIR, "leases and journals"),
    "LOG_LEVEL": ("info", "debug, info, warning or error"),
    "AGENT_BIN": ("cni-bridge-dhcp", "the agent executable"),
}
CHOICES = {
    "DEFAULT_ROUTE": ("node", "dhcp", "none"),
    "FIREWALL_BACKEND": ("auto", "iptables", "nftables", "none"),
    "PORTMAP": ("auto", "true", "false"),
    "STABLE_MAC": ("true", "false"),
    "LOG_LEVEL": ("debug", "info", "warning", "error"),
    "CNI_VERSION": ("0.3.1", "0.4.0", "1.0.0", "1.1.0"),
}


class InstallError(Exception):
    pass


def _ifname_problem(key: str, value: str) -> str | None:
    if not value:
        return f"{key} is empty"
    problem = ifname_problem(value)
    if problem and len(value) > MAX_IFNAME:
        return f"{key}={value!r} {problem} (Linux interface names)"
    if problem:
        return f"{key}={value!r} {problem}"
    return None


def settings_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Every setting, defaults filled in; InstallError listing every bad value."""
    cfg = {key: env.get(key, default).strip() for key, (default, _) in SETTINGS.items()}
    problems: list[str] = []
    bridge_problem = _ifname_problem("BRIDGE", cfg["BRIDGE"])
    if bridge_problem:
        problems.append(bridge_problem)
    uplink = cfg["UPLINK"]
    if re.escape(uplink) == uplink:  # a plain name
        uplink_problem = _ifname_problem("UPLINK", uplink)
        if uplink_problem:
            problems.append(uplink_problem)
    else:
        try:
            re.compile(uplink)
        except re.error as exc:
            problems.append(f"UPLINK={uplink!r} is neither an interface name nor a regex: {exc}")
    if uplink and uplink == cfg["BRIDGE"]:
        problems.append("UPLINK and BRIDGE must differ")
    if not NETWORK_NAME.match(cfg["NETWORK_NAME"]):
        problems.append(
            f"NETWORK_NAME={cfg['NETWORK_NAME']!r} must start with a letter or digit and hold "
            "only letters, digits, '_', '.', '-'"
        )
    name = cfg["CONFLIST_NAME"]
    if "/" in name or not name.endswith(".conflist") or name.startswith("."):
        problems.append(f"CONFLIST_NAME={name!r} must be a file name ending in .conflist")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            problems.append(f"{key}={cfg[key]!r} must be one of {', '.join(allowed)}")
    if not cfg["IPAM_TIMEOUT"].isdigit() or not 1 <= int(cfg["IPAM_TIMEOUT"]) <= 600:
        problems.append(f"IPAM_TIMEOUT={cfg['IPAM_TIMEOUT']!r} must be seconds, 1 to 600")
    if cfg["MTU"] and (not cfg["MTU"].isdigit() or not 68 <= int(cfg["MTU"]) <= 65535):
        problems.append(f"MTU={cfg['MTU']!r} must be empty or 68 to 65535")
    for key in ("AGENT_SOCKET", "STATE_DIR"):
        if not cfg[key].startswith("/"):
            problems.append(f"{key}={cfg[key]!r} must be an absolute path")
    if problems:
        raise InstallError("; ".join(problems))
    return cfg


def render_conflist(cfg: Mapping[str, str], portmap: bool) -> dict[str, Any]:
    plugin: dict[str, Any] = {
        "type": PLUGIN_NAME,
        "bridge": cfg["BRIDGE"],
        "uplinkInterface": cfg["UPLINK"],
        "defaultRoute": cfg["DEFAULT_ROUTE"],
        "firewallBackend": cfg["FIREWALL_BACKEND"],
        "agentSocket": cfg["AGENT_SOCKET"],
        "ipam": {"type": "dhcp", "timeout": int(cfg["IPAM_TIMEOUT"])},
    }
    if cfg["STABLE_MAC"] == "true":
        plugin["ipam"]["stableMac"] = True
    if cfg["MTU"]:
        plugin["mtu"] = int(cfg["MTU"])
    plugins: list[dict[str, Any]] = [plugin]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cfg["CNI_VERSION"], "name": cfg["NETWORK_NAME"], "plugins": plugins}


def write_atomic(path: Path, data: bytes, mode: int) -> bool:
    """Put ``data`` at ``path`` with ``mode``; False (nothing written) if already there."""
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # not subject to the umask
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return True


def missing_interpreter(root: Path, plugin: bytes) -> str | None:
    """The interpreter the plugin's #! line names, when the node (under ``root``) lacks it.

    The kernel runs that path itself: without it, a runtime reports the plugin as missing.
    A dangling symlink counts as present (it may point through the host's own mounts).
    """
    if not plugin.startswith(b"#!"):
        return None  # the native build runs by itself
    path = plugin[2:256].split(b"\n", 1)[0].split(None, 1)[0].decode(errors="replace")
    return None if os.path.lexists(root / path.lstrip("/")) else path


def install(
    root: Path, plugin_source: Path, env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Validate, then install; returns the settings and one line per file."""
    cfg = settings_from_env(env)
    try:
        plugin = plugin_source.read_bytes()
    except OSError as exc:
        raise InstallError(
            f"cannot read the plugin executable {plugin_source}: {exc.strerror}"
        ) from exc
    if not plugin:
        raise InstallError(f"the plugin executable {plugin_source} is empty")
    bin_dir = root / "opt" / "cni" / "bin"
    conf_dir = root / "etc" / "cni" / "net.d"
    portmap = cfg["PORTMAP"] == "true" or (
        cfg["PORTMAP"] == "auto" and (bin_dir / "portmap").exists()
    )
    conflist = render_conflist(cfg, portmap)
    lines: list[str] = []
    for folder in (bin_dir, conf_dir):
        folder.mkdir(parents=True, exist_ok=True)
    # the plugin first: a config naming a plugin that is not there yet fails every pod
    target = bin_dir / PLUGIN_NAME
    changed = write_atomic(target, plugin, 0o755)
    lines.append(f"{'installed' if changed else 'unchanged'} {target} ({len(plugin)} bytes)")
    missing = missing_interpreter(root, plugin)
    if missing:
        lines.append(
            f"warning: the plugin runs {missing}, which this node does not have "
            f"({root / missing.lstrip('/')} is missing): every pod's CNI call will fail with "
            "'no such file or directory' until python3 >= 3.9 is installed there (or install "
            "the native build: make binary-native)"
        )
    conf_path = conf_dir / cfg["CONFLIST_NAME"]
    body = (json.dumps(conflist, indent=2) + "\n").encode()
    changed = write_atomic(conf_path, body, 0o644)
    lines.append(
        f"{'wrote' if changed else 'unchanged'} {conf_path} (network {cfg['NETWORK_NAME']!r}, "
        f"bridge {cfg['BRIDGE']}, uplink {cfg['UPLINK']}, portmap {'on' if portmap else 'off'})"
    )
    return cfg, lines


def agent_command(cfg: Mapping[str, str], extra: list[str]) -> list[str]:
    return [
        cfg["AGENT_BIN"],
        "daemon",
        "--socket",
        cfg["AGENT_SOCKET"],
        "--state-dir",
        cfg["STATE_DIR"],
        "--log-level",
        cfg["LOG_LEVEL"],
        *extra,
    ]


def main(argv: list[str], env: Mapping[str, str]) -> int:
    p = argparse.ArgumentParser(
        prog="cni-bridge-dhcp-install",
        description="Install the cni-bridge-dhcp plugin and network config, then run the agent.",
        epilog="settings (environment): "
        + "; ".join(f"{k} ({d or 'empty'}): {m}" for k, (d, m) in SETTINGS.items()),
    )
    p.add_argument("--root", default="/", help="the host's root (/host in the container)")
    p.add_argument("--plugin", default=DEFAULT_PLUGIN_SOURCE, help="plugin executable to install")
    p.add_argument("--no-exec", action="store_true", help="install only (dry run of the agent)")
    p.add_argument("agent_args", nargs="*", help="extra agent arguments (after --)")
    args = p.parse_args(argv)
    try:
        cfg, lines = install(Path(args.root), Path(args.plugin), env)
    except InstallError as exc:
        sys.stderr.write(f"cni-bridge-dhcp-install: {exc}; nothing was written\n")
        return 2
    for line in lines:
        sys.stderr.write(f"cni-bridge-dhcp-install: {line}\n")
    cmd = agent_command(cfg, args.agent_args)
    if args.no_exec:
        sys.stderr.write(f"cni-bridge-dhcp-install: would run: {' '.join(cmd)}\n")
        return 0
    sys.stderr.write(f"cni-bridge-dhcp-install: running {' '.join(cmd)}\n")
    sys.stderr.flush()
    # exec: the agent replaces this process as the container's PID 1 and gets SIGTERM itself
    os.execvp(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
