"""The DHCP server's lease file against the pods' leases."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..findings import SERVER_LEASES, Finding, bad, ok


@dataclass(frozen=True)
class ServerLease:
    ip: str
    mac: str
    state: str  # binding state: active, free, backup, abandoned, expired ...
    ends: float | None  # epoch seconds; None: never
    uid: bytes | None
    hostname: str = ""

    def active(self, now: float) -> bool:
        return self.state == "active" and (self.ends is None or self.ends > now)


@dataclass(frozen=True)
class PodLease:
    label: str
    address: str
    mac: str
    client_id: bytes | None


OUR_CLIENT_ID_PREFIXES = (b"\x00k8s:", b"\x00cni:", b"\x00sha256:")


def decode_dhcpd_uid(value: str) -> bytes | None:
    """``uid "\\000k8s:..."`` (C string with octal escapes) or ``uid 01:aa:...`` (hex)."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        body, out, i = value[1:-1], bytearray(), 0
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                octal = re.match(r"[0-7]{1,3}", body[i + 1 :])
                if octal:
                    out.append(int(octal.group(0), 8) & 0xFF)
                    i += 1 + len(octal.group(0))
                    continue
                out += body[i + 1].encode()
                i += 2
                continue
            out += c.encode()
            i += 1
        return bytes(out)
    try:
        return bytes(int(part, 16) for part in value.split(":"))
    except ValueError:
        return None


def last_per_address(leases: Iterable[ServerLease]) -> dict[str, ServerLease]:
    """dhcpd appends to its journal: the last entry for an address is the current one."""
    out: dict[str, ServerLease] = {}
    for lease in leases:
        out[lease.ip] = lease
    return out


def check_server_leases(
    path: str | None,
    server: Mapping[str, ServerLease] | None,
    pods: Sequence[PodLease],
    now: float,
    shared_lan: bool,
    error: str = "",
) -> list[Finding]:
    if path is None:
        return [ok(SERVER_LEASES, "not checked (pass --server-leases FILE)")]
    if server is None:
        return [
            bad(
                SERVER_LEASES,
                f"cannot read the server's lease file {path} ({error})",
                "Pass the ISC dhcpd lease file (e.g. /var/lib/dhcp/dhcpd.leases) from the DHCP "
                "server, copied here if the server is another host.",
            )
        ]
    findings: list[Finding] = []
    held = {p.address for p in pods}
    for pod in pods:
        entry = server.get(pod.address)
        if entry is None:
            what = "has no record of it"
        elif not entry.active(now):
            what = f"has it as {entry.state if entry.state != 'active' else 'expired'}"
        elif entry.mac.lower() != pod.mac.lower() and (
            pod.client_id is None or entry.uid != pod.client_id
        ):
            what = f"gave it to another client ({entry.mac})"
        else:
            continue
        findings.append(
            bad(
                SERVER_LEASES,
                f"{pod.label} holds {pod.address}, but the server {what}: it may hand the "
                "address to another host (duplicate address)",
                "The server lost or never stored this lease (restarted without its lease file, "
                "failover peer, or a different server answered: probe with --probe-dhcp). The "
                "agent's next renewal re-registers it if the address is free and is NAKed "
                "otherwise, which gives the pod a new address; to act now, recreate the pod.",
            )
        )
    if not shared_lan:
        for ip, entry in sorted(server.items()):
            if not entry.active(now) or ip in held:
                continue
            if entry.uid is None or not entry.uid.startswith(OUR_CLIENT_ID_PREFIXES):
                continue
            ident = entry.uid[1:].decode(errors="replace")
            findings.append(
                bad(
                    SERVER_LEASES,
                    f"the server has {ip} active for pod identity {ident!r} ({entry.mac}), "
                    "but no pod on this node holds it: the pool leaks until it expires",
                    "A pod was removed without a DHCPRELEASE reaching the server (agent state "
                    "lost, node crash). It frees itself at expiry; to free it now, delete it "
                    "on the server (ISC: `omshell`, or stop dhcpd, remove the lease from "
                    "dhcpd.leases, start it). If other nodes share this LAN, their pods show "
                    "up here too: pass --shared-lan.",
                )
            )
    if not findings:
        findings.append(ok(SERVER_LEASES, f"{len(pods)} pod lease(s) agree with {path}"))
    return findings
