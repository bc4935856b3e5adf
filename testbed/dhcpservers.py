"""Configs and lease-file readers for the LAN DHCP servers beyond dnsmasq and ISC dhcpd:
ISC Kea (kea-dhcp4, memfile CSV) and busybox udhcpd (binary lease file, read with
``busybox dumpleases``). ``Sandbox.start_kea`` / ``Sandbox.start_udhcpd`` use them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LAN_SUBNET = "192.168.77.0/24"
ROUTER_IP = "192.168.77.1"
POOL_START = "192.168.77.100"
POOL_END = "192.168.77.199"
LAN_DOMAIN = "lan.test"


@dataclass(frozen=True)
class Reservation:
    """A fixed address for one client: by MAC (hw-address / dhcp-host / static_lease) or,
    on servers that support it, by client id (hex bytes, e.g. "01:0a:58:..")."""

    ip: str
    mac: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class ServerLease:
    """One lease as the server's own file records it."""

    ip: str
    mac: str
    client_id: str  # hex, "" when none
    active: bool  # False: released (or expired)


def kea_memfile(lease_file: Path) -> dict[str, object]:
    """Kea's lease-database: a CSV that tests read (kea_rows), no lease-file cleanup."""
    return {"type": "memfile", "persist": True, "name": str(lease_file), "lfc-interval": 0}


def kea_lifetime(name: str, seconds: int) -> dict[str, int]:
    """``<name>-lifetime`` fixed: its min and max too, so no client hint changes it."""
    return {
        f"{name}-lifetime": seconds,
        f"min-{name}-lifetime": seconds,
        f"max-{name}-lifetime": seconds,
    }


def kea_stdout_log(name: str, debuglevel: int) -> list[dict[str, object]]:
    """Kea's loggers: ``name`` at DEBUG to stdout (the sandbox's daemon log)."""
    return [
        {
            "name": name,
            "output_options": [{"output": "stdout"}],
            "severity": "DEBUG",
            "debuglevel": debuglevel,
        }
    ]


def kea_config(
    *,
    lease_seconds: int,
    lease_file: Path,
    reservations: tuple[Reservation, ...] = (),
    interface: str = "lan0",
) -> str:
    """kea-dhcp4 JSON for the sandbox LAN: fixed-length leases, authoritative, memfile."""
    hosts = []
    for r in reservations:
        host: dict[str, str] = {"ip-address": r.ip}
        if r.mac:
            host["hw-address"] = r.mac
        if r.client_id:
            host["client-id"] = r.client_id
        hosts.append(host)
    conf = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [interface], "dhcp-socket-type": "raw"},
            "lease-database": kea_memfile(lease_file),
            "authoritative": True,
            **kea_lifetime("valid", lease_seconds),
            "renew-timer": lease_seconds // 2,
            "rebind-timer": lease_seconds * 7 // 8,
            "host-reservation-identifiers": ["hw-address", "client-id"],
            "subnet4": [
                {
                    "id": 1,
                    "subnet": LAN_SUBNET,
                    "pools": [{"pool": f"{POOL_START} - {POOL_END}"}],
                    "option-data": [
                        {"name": "routers", "data": ROUTER_IP},
                        {"name": "domain-name-servers", "data": ROUTER_IP},
                        {"name": "domain-name", "data": LAN_DOMAIN},
                    ],
                    "reservations": hosts,
                }
            ],
            "loggers": kea_stdout_log("kea-dhcp4", 0),
        }
    }
    return json.dumps(conf, indent=2)


def kea_rows(lease_file: Path) -> list[tuple[dict[str, str], bool]]:
    """A Kea memfile CSV (kea-dhcp4 or kea-dhcp6), last row per address wins (a release is
    a row with lifetime 0): each row with whether its lease is active."""
    if not lease_file.exists():
        return []
    last: dict[str, tuple[dict[str, str], bool]] = {}
    with lease_file.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("address"):
                continue
            expire = int(row.get("expire") or 0)
            active = (
                int(row.get("valid_lifetime") or 0) > 0
                and row.get("state", "0") == "0"
                and expire > time.time()
            )
            last[row["address"]] = (row, active)
    return list(last.values())


def kea_leases(lease_file: Path) -> list[ServerLease]:
    """kea-dhcp4's memfile CSV (kea_rows)."""
    return [
        ServerLease(
            ip=row["address"],
            mac=row.get("hwaddr", "").lower(),
            client_id=row.get("client_id", "").replace(":", "").lower(),
            active=active,
        )
        for row, active in kea_rows(lease_file)
    ]


def udhcpd_config(
    *,
    lease_seconds: int,
    lease_file: Path,
    pid_file: Path,
    reservations: tuple[Reservation, ...] = (),
    interface: str = "lan0",
) -> str:
    lines = [
        f"start {POOL_START}",
        f"end {POOL_END}",
        f"interface {interface}",
        f"lease_file {lease_file}",
        f"pidfile {pid_file}",
        "max_leases 100",
        f"min_lease {min(lease_seconds, 60)}",
        "auto_time 1",  # write the lease file every second (tests read it)
        "option subnet 255.255.255.0",
        f"option router {ROUTER_IP}",
        f"option dns {ROUTER_IP}",
        f"option domain {LAN_DOMAIN}",
        f"option lease {lease_seconds}",
    ]
    for r in reservations:
        if r.mac is None:
            raise ValueError("udhcpd reserves by MAC only (static_lease)")
        lines.append(f"static_lease {r.mac} {r.ip}")
    return "\n".join(lines) + "\n"


def udhcpd_leases(lease_file: Path) -> list[ServerLease]:
    """``busybox dumpleases``: its lease file has no client ids; expired/released leases
    (udhcpd sets a released lease's expiry to now) read as inactive."""
    if not lease_file.exists() or lease_file.stat().st_size == 0:
        return []
    busybox = shutil.which("busybox") or "/bin/busybox"
    for attempt in range(20):
        proc = subprocess.run(
            [busybox, "dumpleases", "-f", str(lease_file)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        # udhcpd rewrites its lease file in place (truncate, then write): a read in between
        # meets a short file and dumpleases exits 1. Read again once the write is done.
        if proc.returncode == 0 or attempt == 19:
            break
        time.sleep(0.05)
    proc.check_returncode()
    out = proc.stdout
    leases = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 3:
            continue
        mac, ip = parts[0].lower(), parts[1]
        leases.append(ServerLease(ip=ip, mac=mac, client_id="", active="expired" not in line))
    return leases


def isc_hosts(reservations: tuple[Reservation, ...]) -> str:
    """dhcpd.conf host blocks (by MAC, or by client id: dhcp-client-identifier)."""
    out = []
    for n, r in enumerate(reservations):
        if r.mac:
            key = f"hardware ethernet {r.mac};"
        elif r.client_id:
            key = f"option dhcp-client-identifier {r.client_id};"
        else:
            raise ValueError("a reservation needs a MAC or a client id")
        out.append(f"host r{n} {{ {key} fixed-address {r.ip}; }}\n")
    return "".join(out)


def isc_leases(lease_file: Path) -> list[ServerLease]:
    """dhcpd's journal, last entry per address (dhcp_leases' get_current() is wrong there)."""
    from dhcp_leases import DhcpLeases

    last: dict[str, ServerLease] = {}
    for entry in DhcpLeases(str(lease_file)).get():
        last[entry.ip] = ServerLease(
            ip=entry.ip,
            mac=(entry.ethernet or "").lower(),
            client_id="",
            active=entry.binding_state == "active" and entry.valid,
        )
    return list(last.values())


def dnsmasq_leases(lease_file: Path) -> list[ServerLease]:
    """dnsmasq removes a released lease from its file: every row is active."""
    out: list[ServerLease] = []
    if not lease_file.exists():
        return out
    for line in lease_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5:
            cid = "" if parts[4] == "*" else parts[4].replace(":", "").lower()
            out.append(ServerLease(ip=parts[2], mac=parts[1].lower(), client_id=cid, active=True))
    return out
