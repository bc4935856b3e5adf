"""Exec a CNI plugin for the spec 1.1 verbs GC and STATUS, which libcni 1.1.2 predates.

The plugin sees what a 1.1 runtime would send: ``CNI_COMMAND`` and ``CNI_PATH`` in the
environment and, on stdin, one plugin's configuration from the conflist with the list's
``cniVersion`` and ``name`` (plus ``cni.dev/valid-attachments`` for GC).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_CNI_PATH = "/usr/lib/cni"


def plugin_config(
    conflist: Mapping[str, Any], plugin_path: str | Path, index: int | None = None
) -> dict[str, Any]:
    """The stdin a runtime builds for one plugin of ``conflist``.

    Without ``index`` the first plugin whose ``type`` is the executable's name is used.
    """
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ValueError("conflist has no plugins")
    if index is None:
        kind = Path(plugin_path).name
        index = next((i for i, p in enumerate(plugins) if p.get("type") == kind), 0)
    conf = dict(plugins[index])
    conf["cniVersion"] = conflist.get("cniVersion", "1.1.0")
    conf["name"] = conflist.get("name", "")
    return conf


def _exec(
    command: str,
    plugin_path: str | Path,
    stdin: Mapping[str, Any],
    *,
    netns: str | None,
    env: Mapping[str, str] | None,
    timeout: float,
) -> tuple[int, Any]:
    plugin_dir = str(Path(plugin_path).parent)
    # GC and STATUS carry no per-container variables; drop any this process inherited
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    full_env["CNI_COMMAND"] = command
    full_env["CNI_PATH"] = os.pathsep.join([plugin_dir, DEFAULT_CNI_PATH])
    full_env.update(env or {})
    cmd = [str(plugin_path)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.run(
        cmd,
        input=json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    out = proc.stdout.strip()
    if not out:
        return proc.returncode, None
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        return proc.returncode, out


def gc(
    plugin_path: str | Path,
    conflist: Mapping[str, Any],
    valid_attachments: Sequence[tuple[str, str]] | Sequence[Mapping[str, str]],
    *,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    plugin_index: int | None = None,
    timeout: float = 60,
) -> tuple[int, Any]:
    """CNI GC: everything not in ``valid_attachments`` ((containerID, ifname) pairs) goes.

    Returns (exit code, parsed stdout or None when stdout is empty).
    """
    attachments = [
        dict(a) if isinstance(a, Mapping) else {"containerID": a[0], "ifname": a[1]}
        for a in valid_attachments
    ]
    stdin = plugin_config(conflist, plugin_path, plugin_index)
    stdin["cni.dev/valid-attachments"] = attachments
    return _exec("GC", plugin_path, stdin, netns=netns, env=env, timeout=timeout)


def status(
    plugin_path: str | Path,
    conflist: Mapping[str, Any],
    *,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    plugin_index: int | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """CNI STATUS: exit 0 when the plugin is ready for ADDs; else its error JSON."""
    stdin = plugin_config(conflist, plugin_path, plugin_index)
    return _exec("STATUS", plugin_path, stdin, netns=netns, env=env, timeout=timeout)
