"""DHCPv6 servers on the sandbox LAN (lan namespace, lan0): ISC Kea (kea-dhcp6, memfile
CSV in the test's tmp dir) and dnsmasq with a DHCPv6 range (its RAs then carry the M flag).
Kept beside the Sandbox rather than in it: each starts through the Sandbox's own spawn
and readiness helpers, so it is stopped (by pid) and cleaned up with the sandbox."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from testbed.dhcpservers import kea_lifetime, kea_memfile, kea_rows, kea_stdout_log
from testbed.sandbox import LAN_PREFIX6, ROUTER_IP6, Daemon, Sandbox, run

POOL6_START = f"{LAN_PREFIX6}1000"
POOL6_END = f"{LAN_PREFIX6}1fff"
DNS6 = f"{LAN_PREFIX6}53"
DOMAIN6 = "v6.lan.test"


@dataclass(frozen=True)
class Lease6Row:
    address: str
    duid: str  # hex, no colons
    iaid: int
    active: bool  # False: released or expired


def kea6_config(
    *,
    lease_file: Path,
    data_dir: Path,
    valid: int = 20,
    preferred: int = 15,
    renew: int = 5,
    rebind: int = 10,
) -> str:
    conf = {
        "Dhcp6": {
            # lan0's link-local may still be in DAD: Kea binds it, so it retries
            "interfaces-config": {
                "interfaces": ["lan0"],
                "service-sockets-max-retries": 40,
                "service-sockets-retry-wait-time": 250,
            },
            "data-directory": str(data_dir),
            "lease-database": kea_memfile(lease_file),
            **kea_lifetime("preferred", preferred),
            **kea_lifetime("valid", valid),
            "renew-timer": renew,
            "rebind-timer": rebind,
            "subnet6": [
                {
                    "id": 1,
                    "subnet": f"{LAN_PREFIX6}/64",
                    "interface": "lan0",
                    "pools": [{"pool": f"{POOL6_START}-{POOL6_END}"}],
                    "option-data": [
                        {"name": "dns-servers", "data": DNS6},
                        {"name": "domain-search", "data": DOMAIN6},
                    ],
                }
            ],
            "loggers": kea_stdout_log("kea-dhcp6", 40),
        }
    }
    return json.dumps(conf, indent=2)


def ensure_lan_ipv6(sb: Sandbox) -> None:
    """The LAN's IPv6 router (Sandbox.enable_lan_ipv6), unless it is set up already."""
    shown = run(["ip", "-6", "addr", "show", "dev", "lan0"], netns=sb.lan).stdout
    if ROUTER_IP6 not in shown:
        sb.enable_lan_ipv6()


def kea6_lease_path(sb: Sandbox) -> Path:
    return sb.tmp / "kea-leases6.csv"


def _listening_dhcp6(sb: Sandbox, pid: int) -> bool:
    out = run(["ss", "-Hulpn", "sport = :547"], netns=sb.lan, check=False, timeout=5).stdout
    return f"pid={pid}," in out


def start_kea6(sb: Sandbox, **timers: int) -> Daemon:
    """kea-dhcp6 on lan0 for LAN_PREFIX6/64 (pool ::1000-::1fff, DNS6, DOMAIN6); short
    lifetimes by default (valid 20 s, T1 5 s). The LAN gets its IPv6 router first."""
    ensure_lan_ipv6(sb)
    run_dir = sb.tmp / "kea6-run"
    run_dir.mkdir(exist_ok=True)
    conf = sb.tmp / "kea-dhcp6.json"
    conf.write_text(kea6_config(lease_file=kea6_lease_path(sb), data_dir=run_dir, **timers))
    env = {"KEA_PIDFILE_DIR": str(run_dir), "KEA_LOCKFILE_DIR": str(run_dir)}
    cmd = [shutil.which("kea-dhcp6") or "/usr/sbin/kea-dhcp6", "-c", str(conf)]
    daemon = sb._spawn("kea6", cmd, netns=sb.lan, env=env)
    sb._wait_until(daemon, lambda: _listening_dhcp6(sb, daemon.pid), "listening on :547")
    return daemon


def kea6_leases(lease_file: Path) -> list[Lease6Row]:
    """kea-dhcp6's memfile CSV (dhcpservers.kea_rows: last row per address wins)."""
    return [
        Lease6Row(
            address=row["address"],
            duid=row.get("duid", "").replace(":", "").lower(),
            iaid=int(row.get("iaid") or 0),
            active=active,
        )
        for row, active in kea_rows(lease_file)
    ]


def start_dnsmasq_dhcpv6(sb: Sandbox, *, ra_only: bool = False) -> Daemon:
    """dnsmasq serving DHCPv4 as usual plus, with IPv6 RAs: a stateful DHCPv6 range
    (RAs with the M flag, prefix without A flag) or, ``ra_only``, SLAAC only (no M flag)."""
    if ra_only:
        return sb.start_dnsmasq(ipv6_ra=True)
    ensure_lan_ipv6(sb)
    extra = [
        "--enable-ra",
        f"--dhcp-range={POOL6_START},{POOL6_END},64,2m",
        "--ra-param=lan0,10,1800",
        f"--dhcp-option=option6:dns-server,[{DNS6}]",
        f"--dhcp-option=option6:domain-search,{DOMAIN6}",
    ]
    return sb.start_dnsmasq(extra=extra)
