"""Run a non-DHCP IPAM plugin (host-local, static, ...) from CNI_PATH, as the reference does."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ...cni.result import to_internal

TIMEOUT = 60.0


def find_plugin(name: str, cni_path: str) -> str:
    if "/" in name or not name:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"ipam.type {name!r} is not a plugin name")
    dirs = [d for d in cni_path.split(":") if d]
    for d in dirs:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(
        ErrorCode.INVALID_CONFIG,
        f"ipam plugin {name!r} not found in CNI_PATH",
        f"searched: {', '.join(dirs) or '(empty CNI_PATH)'}",
    )


async def exec_ipam(
    command: str,
    ipam_type: str,
    conf: dict[str, Any],
    *,
    container_id: str,
    netns: str,
    ifname: str,
    cni_args: str,
    cni_path: str,
) -> dict[str, Any]:
    plugin = find_plugin(ipam_type, cni_path)
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": cni_path,
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    proc = await asyncio.create_subprocess_exec(
        plugin,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(conf).encode()), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CNIError(
            ErrorCode.IPAM_DELEGATE_FAILED, f"ipam plugin {ipam_type} {command} timed out"
        ) from None
    if proc.returncode != 0:
        try:
            body = json.loads(out)
            code, msg = int(body.get("code", 0)), str(body.get("msg", ""))
            details = str(body.get("details", ""))
        except (ValueError, AttributeError, TypeError):
            code, msg, details = 0, "", ""
        raise CNIError(
            code or ErrorCode.IPAM_DELEGATE_FAILED,
            f"ipam plugin {ipam_type} {command} failed: {msg or err.decode(errors='replace').strip()}",
            details,
        )
    if command != "ADD":
        return {}
    try:
        result = json.loads(out)
    except ValueError:
        raise CNIError(
            ErrorCode.IPAM_DELEGATE_FAILED, f"ipam plugin {ipam_type} returned invalid JSON"
        ) from None
    if not isinstance(result, dict):
        raise CNIError(
            ErrorCode.IPAM_DELEGATE_FAILED, f"ipam plugin {ipam_type} returned a non-object"
        )
    return to_internal(result)
