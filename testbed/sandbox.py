"""Disposable network sandboxes for netns and e2e tests.

A ``Sandbox`` owns a ``lan`` namespace (bridge ``lan0`` = the LAN, with a real DHCP server
when asked), a ``node`` namespace whose ``eth0`` is a veth into ``lan0`` (where the agent and
the plugin run), and any number of pod namespaces created from the root namespace with
``ip netns add``, as a container runtime would. Nothing here touches the root namespace's
links, addresses, routes, sysctls or firewall: every command that changes network state
runs with ``ip -n <ns>`` or ``ip netns exec <ns>``.

Every subprocess is bounded by a timeout; every daemon is stopped by pid; ``teardown`` is
idempotent and also runs at interpreter exit for sandboxes a crashed test left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from testbed.dhcpservers import Reservation

LAN_SUBNET = "192.168.77.0/24"
ROUTER_IP = "192.168.77.1"
NODE_IP = "192.168.77.10"
POOL_START = "192.168.77.100"
POOL_END = "192.168.77.199"
LAN_DOMAIN = "lan.test"
# IPv6 of the LAN (start_dnsmasq(ipv6_ra=True)): the router announces LAN_PREFIX6::/64 for
# SLAAC, and a host "behind the router" (a dummy in the lan namespace) has BEHIND_IP6.
LAN_PREFIX6 = "fd77:77::"
ROUTER_IP6 = "fd77:77::1"
BEHIND_IP6 = "fd78:78::1"

REPO_ROOT = Path(__file__).resolve().parents[1]
CNITOOL = REPO_ROOT / "build" / "cnitool"
NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "cbd"  # every namespace this module creates starts with "cbd-"

DAEMON_START_TIMEOUT = 15.0
DAEMON_STOP_TIMEOUT = 5.0
_UNIX_PATH_MAX = 107


def dhcpd_config(
    *,
    lease_seconds: int,
    subnet: str = "192.168.77.0",
    router: str = ROUTER_IP,
    ranges: tuple[tuple[str, str], ...] = ((POOL_START, POOL_END),),
) -> str:
    """A dhcpd.conf for one /24 with fixed-length leases (no ping check, authoritative)."""
    range_lines = "".join(f"  range {a} {b};\n" for a, b in ranges)
    prefix = subnet.rsplit(".", 1)[0]
    return f"""\
authoritative;
ddns-update-style none;
ping-check false;
default-lease-time {lease_seconds};
max-lease-time {lease_seconds};
min-lease-time {lease_seconds};
option domain-name "{LAN_DOMAIN}";
option domain-name-servers {router};
subnet {subnet} netmask 255.255.255.0 {{
{range_lines}  option routers {router};
  option subnet-mask 255.255.255.0;
  option broadcast-address {prefix}.255;
}}
"""


class SandboxError(RuntimeError):
    """A sandbox step failed; the message carries the command output or daemon log."""


def run(
    cmd: list[str],
    *,
    netns: str | None = None,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (inside ``netns`` if given) and capture its text output.

    ``env`` is merged over the current environment. With ``check`` a non-zero exit raises
    ``SandboxError`` whose message includes stdout and stderr.
    """
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    merged = {**os.environ, **env} if env is not None else None
    proc = subprocess.run(
        full,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=merged,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise SandboxError(
            f"command failed (exit {proc.returncode}): {' '.join(full)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    """Pids of processes living in namespace ``name`` (empty if it does not exist)."""
    if not netns_exists(name):
        return []
    proc = run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _read_text(path: Path, limit: int | None = 20000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc.strerror}>"
    return data if limit is None else data[-limit:]


@dataclass
class Daemon:
    """A background process started inside a sandbox namespace."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log_fh: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return _read_text(self.log_path)

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; also reaps anything left in its process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DAEMON_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=DAEMON_STOP_TIMEOUT)
        # The daemon was started in its own session, so its pid is the group id; children
        # it forked (and orphaned) are ours to end too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


@dataclass(frozen=True)
class Pod:
    name: str
    path: str  # /run/netns/<name>


_live: set[Sandbox] = set()
_live_lock = threading.Lock()
_build_lock = threading.Lock()
_cnitool_checked = False


def _teardown_leftovers() -> None:
    with _live_lock:
        boxes = list(_live)
    for box in boxes:
        with contextlib.suppress(Exception):
            box.teardown()


atexit.register(_teardown_leftovers)


class Sandbox:
    """lan + node namespaces with a fake LAN 192.168.77.0/24; see the module docstring."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.prefix = f"{NAME_PREFIX}-{secrets.token_hex(3)}"
        self.lan = f"{self.prefix}-lan"
        self.node = f"{self.prefix}-node"
        self.pods: list[Pod] = []
        self.daemons: list[Daemon] = []
        self.state_dir = self.tmp / "state"
        self.agent_socket = self.tmp / "agent.sock"
        if len(str(self.agent_socket)) > _UNIX_PATH_MAX - 10:
            # pytest tmp paths can be long; unix socket paths cannot
            self._short_dir: Path | None = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            self.agent_socket = self._short_dir / "agent.sock"
        else:
            self._short_dir = None
        self.agent_log = self.tmp / "agent.log"
        self.netconf_dir = self.tmp / "net.d"
        self.cni_bin_dir = self.tmp / "bin"
        self.cni_cache_dir = self.tmp / "cni-cache"
        self.dnsmasq_leases_path = self.tmp / "dnsmasq.leases"
        self.dhcpd_leases_path = self.tmp / "dhcpd.leases"
        self.kea_leases_path = self.tmp / "kea-leases4.csv"
        self.udhcpd_leases_path = self.tmp / "udhcpd.leases"
        self._namespaces: list[str] = []  # in creation order
        self._pod_seq = 0
        self._torn_down = False

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        with _live_lock:
            _live.add(self)
        try:
            self._setup()
        except BaseException:
            self.teardown()
            raise

    def _add_netns(self, name: str) -> None:
        if netns_exists(name):
            raise SandboxError(f"namespace {name} already exists; refusing to reuse it")
        # record before creating so a half-made namespace is still cleaned up
        self._namespaces.append(name)
        run(["ip", "netns", "add", name], timeout=10)

    def _setup(self) -> None:
        lan, node = self.lan, self.node
        self._add_netns(lan)
        self._add_netns(node)
        ip_lan = ["ip", "-n", lan]
        ip_node = ["ip", "-n", node]
        run([*ip_lan, "link", "set", "lo", "up"])
        run([*ip_lan, "link", "add", "lan0", "type", "bridge", "forward_delay", "0"])
        run([*ip_lan, "addr", "add", f"{ROUTER_IP}/24", "dev", "lan0"])
        run([*ip_lan, "link", "set", "lan0", "up"])
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=lan)
        run(
            [*ip_lan, "link", "add", "node0", "type", "veth", "peer", "name", "eth0", "netns", node]
        )
        run([*ip_lan, "link", "set", "node0", "master", "lan0", "up"])
        run([*ip_node, "link", "set", "lo", "up"])
        run([*ip_node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0"])
        run([*ip_node, "link", "set", "eth0", "up"])
        run([*ip_node, "route", "add", "default", "via", ROUTER_IP])

    def teardown(self) -> None:
        """Stop every daemon, end stray processes in our namespaces, delete the namespaces."""
        for daemon in reversed(self.daemons):
            with contextlib.suppress(Exception):
                daemon.stop()
        # pods first, then node, then lan: reverse creation order
        for name in reversed(self._namespaces):
            self._kill_netns_processes(name)
            if netns_exists(name):
                run(["ip", "netns", "delete", name], check=False, timeout=10)
        self._namespaces = [n for n in self._namespaces if netns_exists(n)]
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
        self._torn_down = not self._namespaces
        if self._torn_down:
            with _live_lock:
                _live.discard(self)

    @staticmethod
    def _kill_netns_processes(name: str) -> None:
        # Only processes inside a namespace this sandbox created: started by this test run.
        for _ in range(3):
            pids = [p for p in netns_pids(name) if p != os.getpid()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def __enter__(self) -> Sandbox:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- namespaces ------------------------------------------------------------------------

    def add_pod(self, suffix: str) -> Pod:
        """A fresh, empty pod namespace (`ip netns add`, from the root namespace)."""
        name = f"{self.prefix}-pod-{suffix}"
        self._add_netns(name)
        pod = Pod(name=name, path=str(NETNS_DIR / name))
        self.pods.append(pod)
        return pod

    def attach_to_lan(self, pod: Pod, *, ifname: str = "eth0", mac: str | None = None) -> str:
        """Plug ``pod`` straight into the LAN bridge (a plain LAN host, not a CNI pod).

        Returns the name of the lan-side veth end.
        """
        self._pod_seq += 1
        peer = f"h{self._pod_seq}"
        cmd = ["ip", "-n", self.lan, "link", "add", peer, "type", "veth"]
        cmd += ["peer", "name", ifname, "netns", pod.name]
        if mac:
            cmd += ["address", mac]
        run(cmd)
        run(["ip", "-n", self.lan, "link", "set", peer, "master", "lan0", "up"])
        run(["ip", "-n", pod.name, "link", "set", "lo", "up"])
        run(["ip", "-n", pod.name, "link", "set", ifname, "up"])
        return peer

    # -- daemons ---------------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        netns: str,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
    ) -> Daemon:
        """``cmd`` as a daemon in ``netns`` (own session, stopped by pid at teardown), behind
        ``launcher`` if given (a command prefix entering ``netns`` its own way)."""
        log_path = log_path or self.tmp / f"{name}.log"
        log_fh = open(log_path, "ab")  # noqa: SIM115 - owned by the Daemon, closed in stop()
        try:
            proc = subprocess.Popen(
                [*(launcher or ["ip", "netns", "exec", netns]), *cmd],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=str(REPO_ROOT),
                start_new_session=True,
            )
        except BaseException:
            log_fh.close()
            raise
        daemon = Daemon(name=name, proc=proc, log_path=log_path, _log_fh=log_fh)
        self.daemons.append(daemon)
        return daemon

    def _wait_until(self, daemon: Daemon, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while time.monotonic() < deadline:
            if ready():
                return
            if not daemon.alive():
                raise SandboxError(
                    f"{daemon.name} exited with {daemon.proc.returncode} before {what}; "
                    f"log {daemon.log_path}:\n{daemon.log()}"
                )
            time.sleep(0.05)
        daemon.stop()
        raise SandboxError(
            f"{daemon.name} not ready ({what}) after {DAEMON_START_TIMEOUT:.0f} s; "
            f"log {daemon.log_path}:\n{daemon.log()}"
        )

    def enable_lan_ipv6(self) -> None:
        """The router (lan namespace) gets ROUTER_IP6/64 on lan0 and, behind it, BEHIND_IP6
        on ``wan0`` (one end of a veth pair kept in the lan namespace: no dummy module
        needed) that also carries its IPv6 default route (dnsmasq announces a router
        lifetime only when the router has a default route)."""
        ip_lan = ["ip", "-n", self.lan]
        run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], netns=self.lan)
        run([*ip_lan, "-6", "addr", "add", f"{ROUTER_IP6}/64", "dev", "lan0", "nodad"])
        run([*ip_lan, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1"])
        run([*ip_lan, "link", "set", "wan1", "up"])
        run([*ip_lan, "-6", "addr", "add", f"{BEHIND_IP6}/64", "dev", "wan0", "nodad"])
        run([*ip_lan, "link", "set", "wan0", "up"])
        run([*ip_lan, "-6", "route", "add", "default", "dev", "wan0"])

    def _listening_dhcp(self, pid: int, netns: str | None = None) -> bool:
        out = run(
            ["ss", "-Hulpn", "sport = :67"], netns=netns or self.lan, check=False, timeout=5
        ).stdout
        return f"pid={pid}," in out

    def start_dnsmasq(
        self,
        *,
        no_ping: bool = True,
        lease: str = "2m",
        extra: list[str] | None = None,
        ipv6_ra: bool = False,
        netns: str | None = None,
        interface: str = "lan0",
        pool: tuple[str, str] = (POOL_START, POOL_END),
        router: str = ROUTER_IP,
    ) -> Daemon:
        """dnsmasq as the LAN's DHCP server on lan0 (no DNS); returns once it listens on :67.

        ``ipv6_ra``: the LAN also announces IPv6 (router advertisements for SLAAC of
        LAN_PREFIX6/64, see ``enable_lan_ipv6``), as most home routers do. ``netns``,
        ``interface``, ``pool`` and ``router``: a server elsewhere (the node itself, say).
        """
        self.dnsmasq_leases_path.touch()
        if ipv6_ra:
            self.enable_lan_ipv6()
            extra = [
                "--enable-ra",
                f"--dhcp-range={LAN_PREFIX6},ra-only,64",
                # RA every 10 s (lifetime 1800 s): a restarted node relearns its route soon.
                "--ra-param=lan0,10,1800",
                *(extra or []),
            ]
        log_path = self.tmp / "dnsmasq.log"
        cmd = [
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",  # uid 0: dnsmasq skips its privilege drop entirely
            "--group=root",
            "--bind-interfaces",
            f"--interface={interface}",
            "--except-interface=lo",
            "--port=0",
            f"--dhcp-range={pool[0]},{pool[1]},255.255.255.0,{lease}",
            f"--dhcp-option=option:router,{router}",
            f"--dhcp-option=option:dns-server,{router}",
            f"--domain={LAN_DOMAIN}",
            f"--dhcp-leasefile={self.dnsmasq_leases_path}",
            "--log-dhcp",
            f"--log-facility={log_path}",
            f"--pid-file={self.tmp / 'dnsmasq.pid'}",
        ]
        if no_ping:
            cmd.append("--no-ping")
        cmd += extra or []
        where = netns or self.lan
        daemon = self._spawn("dnsmasq", cmd, netns=where, log_path=log_path)
        self._wait_until(
            daemon, lambda: self._listening_dhcp(daemon.pid, where), "listening on :67"
        )
        return daemon

    def start_dhcpd(
        self, *, lease_seconds: int = 30, config: str | None = None, fresh_leases: bool = False
    ) -> Daemon:
        """ISC dhcpd on lan0 with short leases (renew/expiry tests), or with ``config`` (text
        of a dhcpd.conf); ``fresh_leases`` empties its lease file. Returns once it listens."""
        conf = self.tmp / "dhcpd.conf"
        conf.write_text(config if config is not None else dhcpd_config(lease_seconds=lease_seconds))
        if fresh_leases:
            self.dhcpd_leases_path.write_text("")
        self.dhcpd_leases_path.touch()
        cmd = [
            shutil.which("dhcpd") or "/usr/sbin/dhcpd",
            "-4",
            "-d",  # foreground (-f) and log to stderr, which lands in the log file
            "-cf",
            str(conf),
            "-lf",
            str(self.dhcpd_leases_path),
            "-pf",
            str(self.tmp / "dhcpd.pid"),
            "lan0",
        ]
        daemon = self._spawn("dhcpd", cmd, netns=self.lan)
        self._wait_until(daemon, lambda: self._listening_dhcp(daemon.pid), "listening on :67")
        return daemon

    def start_kea(
        self, *, lease_seconds: int = 60, reservations: tuple[Reservation, ...] = ()
    ) -> Daemon:
        """ISC Kea (kea-dhcp4, memfile leases in ``kea_leases_path``) on lan0; returns once
        it listens. Its pid and lock files go to the sandbox's tmp dir, never /run/kea."""
        from testbed.dhcpservers import kea_config

        conf = self.tmp / "kea-dhcp4.json"
        conf.write_text(
            kea_config(
                lease_seconds=lease_seconds,
                lease_file=self.kea_leases_path,
                reservations=reservations,
            )
        )
        run_dir = self.tmp / "kea-run"
        run_dir.mkdir(exist_ok=True)
        env = {"KEA_PIDFILE_DIR": str(run_dir), "KEA_LOCKFILE_DIR": str(run_dir)}
        cmd = [shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4", "-c", str(conf)]
        daemon = self._spawn("kea", cmd, netns=self.lan, env=env)
        self._wait_until(daemon, lambda: self._listening_dhcp(daemon.pid), "listening on :67")
        return daemon

    def start_radvd(self, *, min_delay_between_ras: float = 3.0) -> Daemon:
        """radvd as the LAN's router (LAN_PREFIX6/64 for SLAAC) the way RFC 4861 describes
        one: solicited RAs are multicast and at most one every ``min_delay_between_ras``
        seconds, and unsolicited ones rare (30-60 s), so a second pod's solicitation right
        after a first one's is answered up to that long later. Returns once it announces."""
        self.enable_lan_ipv6()
        conf = self.tmp / "radvd.conf"
        conf.write_text(
            "interface lan0 {\n"
            "  AdvSendAdvert on;\n"
            "  MinRtrAdvInterval 30;\n"
            "  MaxRtrAdvInterval 60;\n"
            f"  MinDelayBetweenRAs {min_delay_between_ras};\n"
            "  AdvRASolicitedUnicast off;\n"
            "  AdvDefaultLifetime 1800;\n"
            f"  prefix {LAN_PREFIX6}/64 {{ AdvOnLink on; AdvAutonomous on; }};\n"
            "};\n"
        )
        pid_file = self.tmp / "radvd.pid"
        log_path = self.tmp / "radvd.log"
        radvd = shutil.which("radvd") or "/usr/sbin/radvd"
        cmd = [radvd, "--nodaemon", "-C", str(conf), "-p", str(pid_file), "-m", "stderr", "-d", "1"]
        daemon = self._spawn("radvd", cmd, netns=self.lan, log_path=log_path)
        self._wait_until(daemon, pid_file.exists, f"pid file {pid_file}")
        return daemon

    def start_udhcpd(
        self,
        *,
        lease_seconds: int = 60,
        reservations: tuple[Reservation, ...] = (),
        arp_ping_ms: int = 2000,
    ) -> Daemon:
        """busybox udhcpd on lan0 (ARP-pings each new address for ``arp_ping_ms``, one packet
        at a time); leases in ``udhcpd_leases_path`` (testbed.dhcpservers.udhcpd_leases)."""
        from testbed.dhcpservers import udhcpd_config

        conf = self.tmp / "udhcpd.conf"
        conf.write_text(
            udhcpd_config(
                lease_seconds=lease_seconds,
                lease_file=self.udhcpd_leases_path,
                pid_file=self.tmp / "udhcpd.pid",
                reservations=reservations,
            )
        )
        self.udhcpd_leases_path.touch()
        busybox = shutil.which("busybox") or "/bin/busybox"
        cmd = [busybox, "udhcpd", "-f", "-a", str(arp_ping_ms), str(conf)]
        daemon = self._spawn("udhcpd", cmd, netns=self.lan)
        self._wait_until(daemon, lambda: self._listening_dhcp(daemon.pid), "listening on :67")
        return daemon

    def start_agent(
        self,
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> Daemon:
        """The cni-bridge-dhcp agent inside the node namespace; returns once its socket exists.

        ``nofile`` = (soft, hard) runs it under that open-file limit (prlimit execs the
        agent, so the daemon's pid is the agent's)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not any(d.alive() for d in self.daemons if d.name == "agent"):
            # a socket left by a stopped agent would satisfy the readiness check too early
            self.agent_socket.unlink(missing_ok=True)
        limit = [] if nofile is None else ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"]
        cmd = [
            *limit,
            sys.executable,
            "-m",
            "cni_bridge_dhcp",
            "daemon",
            "--socket",
            str(self.agent_socket),
            "--state-dir",
            str(self.state_dir),
            "--log-file",
            str(self.agent_log),
            "--log-level",
            "debug",
            *(extra_args or []),
        ]
        env = {"PYTHONUNBUFFERED": "1", **(env or {})}
        daemon = self._spawn(
            "agent", cmd, netns=self.node, log_path=self.tmp / "agent.stderr", env=env
        )
        self._wait_until(daemon, self.agent_socket.exists, f"socket {self.agent_socket} exists")
        return daemon

    def agent_logs(self) -> str:
        """The agent's whole --log-file (its stderr carries the same lines, plus crashes)."""
        if self.agent_log.exists():
            return _read_text(self.agent_log, limit=None)
        return self.agent_stderr()

    def agent_stderr(self) -> str:
        return _read_text(self.tmp / "agent.stderr", limit=None)

    # -- CNI -------------------------------------------------------------------------------

    def plugin_wrapper(self) -> Path:
        """<tmp>/bin/cni-bridge-dhcp: a sh wrapper running this checkout's plugin."""
        self.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = self.cni_bin_dir / "cni-bridge-dhcp"
        if not wrapper.exists():
            wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m cni_bridge_dhcp "$@"\n')
            wrapper.chmod(0o755)
        return wrapper

    def cni_env(
        self,
        net: str,
        *,
        ifname: str = "eth0",
        cni_args: str = "",
        cap_args: dict[str, object] | None = None,
    ) -> dict[str, str]:
        return {
            "NETCONFPATH": str(self.netconf_dir),
            "CNI_PATH": f"{self.cni_bin_dir}:/usr/lib/cni",
            "CNI_IFNAME": ifname,
            "CNI_ARGS": cni_args,
            "CAP_ARGS": json.dumps(cap_args or {}),
            "CNITOOL_CACHE_DIR": str(self.cni_cache_dir),
        }

    def write_conflist(self, net: str, conflist: dict[str, object]) -> Path:
        """Write ``conflist`` (its name defaults to ``net``) to <tmp>/net.d/<net>.conflist."""
        self.netconf_dir.mkdir(parents=True, exist_ok=True)
        conf = {"name": net, **conflist}
        path = self.netconf_dir / f"{net}.conflist"
        # Atomic: concurrent cnitool runs read this file while others rewrite it.
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
        tmp.write_text(json.dumps(conf, indent=2))
        tmp.replace(path)
        return path

    def cnitool(
        self,
        op: str,
        net: str,
        pod: Pod,
        *,
        conflist: dict[str, object],
        ifname: str = "eth0",
        cni_args: str = "",
        cap_args: dict[str, object] | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """`cnitool add|check|del <net> <pod netns>` run inside the node namespace."""
        ensure_cnitool()
        self.write_conflist(net, conflist)
        self.plugin_wrapper()
        self.cni_cache_dir.mkdir(parents=True, exist_ok=True)
        env = self.cni_env(net, ifname=ifname, cni_args=cni_args, cap_args=cap_args)
        return run(
            [str(CNITOOL), op, net, pod.path],
            netns=self.node,
            check=check,
            timeout=timeout,
            env=env,
        )


def ensure_cnitool() -> Path:
    """Build build/cnitool with `make cnitool` (once per process; make skips it if fresh)."""
    global _cnitool_checked
    with _build_lock:
        if not _cnitool_checked:
            proc = subprocess.run(
                ["make", "-s", "-C", str(REPO_ROOT), "cnitool"],
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0 or not CNITOOL.exists():
                raise SandboxError(f"make cnitool failed:\n{proc.stdout}\n{proc.stderr}")
            _cnitool_checked = True
    return CNITOOL


def parse_dnsmasq_leases(path: Path) -> list[dict[str, str]]:
    """dnsmasq lease file rows: expiry, mac, ip, hostname, client-id."""
    rows = []
    for line in _read_text(path).splitlines():
        parts = line.split()
        if len(parts) >= 5:
            keys = ("expiry", "mac", "ip", "hostname", "client_id")
            rows.append(dict(zip(keys, parts[:5], strict=True)))
    return rows


# -- root namespace guard -------------------------------------------------------------------

_LINK_KEYS = ("ifindex", "ifname", "address", "mtu", "master", "flags", "link_type")
_ADDR_KEYS = ("family", "local", "prefixlen", "scope", "broadcast", "label", "address")
_ROUTE_VOLATILE = ("expires",)
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_VOLATILE = re.compile(r"\s+expires \S+|\s+counter packets \d+ bytes \d+")
_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
)

Snapshot = dict[str, object]


def _cmd_output(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return f"<{cmd[0]} not installed>"
    proc = run(cmd, check=False, timeout=30)
    if proc.returncode != 0:
        return f"<{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}>"
    return proc.stdout


def _json_cmd(cmd: list[str]) -> object:
    out = _cmd_output(cmd)
    try:
        return json.loads(out) if out.strip() else []
    except json.JSONDecodeError:
        return out


def _normalize_links(links: object) -> object:
    if not isinstance(links, list):
        return links
    norm = [{k: link[k] for k in _LINK_KEYS if k in link} for link in links]
    for link in norm:
        if isinstance(link.get("flags"), list):
            link["flags"] = sorted(link["flags"])
    return sorted(norm, key=lambda link: str(link.get("ifname")))


def _normalize_addrs(ifaces: object) -> object:
    if not isinstance(ifaces, list):
        return ifaces
    out: dict[str, list[dict[str, object]]] = {}
    for iface in ifaces:
        infos = [{k: a[k] for k in _ADDR_KEYS if k in a} for a in iface.get("addr_info", [])]
        out[str(iface.get("ifname"))] = sorted(infos, key=lambda a: json.dumps(a, sort_keys=True))
    return out


def _normalize_routes(routes: object) -> object:
    if not isinstance(routes, list):
        return routes
    norm = [{k: v for k, v in r.items() if k not in _ROUTE_VOLATILE} for r in routes]
    return sorted(json.dumps(r, sort_keys=True) for r in norm)


def _normalize_xtables(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [_COUNTERS.sub("", ln).rstrip() for ln in lines]


def _sysctls() -> dict[str, str]:
    paths = [Path("/proc/sys", key) for key in _SYSCTLS]
    bridge = Path("/proc/sys/net/bridge")
    if bridge.is_dir():
        paths += sorted(bridge.iterdir())
    values = {}
    for path in paths:
        with contextlib.suppress(OSError):
            values[str(path.relative_to("/proc/sys"))] = path.read_text().strip()
    return values


def snapshot_root() -> Snapshot:
    """Everything the product could change in the namespace this process runs in."""
    return {
        "links": _normalize_links(_json_cmd(["ip", "-j", "link", "show"])),
        "addrs": _normalize_addrs(_json_cmd(["ip", "-j", "addr", "show"])),
        "routes4": _normalize_routes(
            _json_cmd(["ip", "-4", "-j", "route", "show", "table", "all"])
        ),
        "routes6": _normalize_routes(
            _json_cmd(["ip", "-6", "-j", "route", "show", "table", "all"])
        ),
        "rules4": _normalize_routes(_json_cmd(["ip", "-4", "-j", "rule", "show"])),
        "iptables-legacy": _normalize_xtables(_cmd_output(["iptables-legacy-save"])),
        "ip6tables-legacy": _normalize_xtables(_cmd_output(["ip6tables-legacy-save"])),
        "iptables-nft": _normalize_xtables(_cmd_output(["iptables-nft-save"])),
        "ip6tables-nft": _normalize_xtables(_cmd_output(["ip6tables-nft-save"])),
        "nft": [
            _NFT_VOLATILE.sub("", ln).rstrip()
            for ln in _cmd_output(["nft", "-s", "list", "ruleset"]).splitlines()
        ],
        "sysctl": _sysctls(),
    }


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    problems = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):
            old_s = [json.dumps(x, sort_keys=True) if not isinstance(x, str) else x for x in old]
            new_s = [json.dumps(x, sort_keys=True) if not isinstance(x, str) else x for x in new]
            gone = [x for x in old_s if x not in new_s]
            added = [x for x in new_s if x not in old_s]
            detail = "".join(f"\n  - {x}" for x in gone) + "".join(f"\n  + {x}" for x in added)
            problems.append(f"{key} changed:{detail or ' (order or duplicates)'}")
        elif isinstance(old, dict) and isinstance(new, dict):
            lines = []
            for k in sorted(set(old) | set(new)):
                if old.get(k) != new.get(k):
                    lines.append(f"\n  {k}: {old.get(k)!r} -> {new.get(k)!r}")
            problems.append(f"{key} changed:{''.join(lines)}")
        else:
            problems.append(f"{key} changed: {old!r} -> {new!r}")
    return problems


def ping(netns: str, address: str, *, count: int = 1, wait: int = 2) -> bool:
    """One ICMP echo from inside ``netns`` (busybox ping: iputils is not a dependency)."""
    cmd = ["busybox", "ping", "-c", str(count), "-W", str(wait), address]
    return run(cmd, netns=netns, check=False, timeout=count * wait + 10).returncode == 0
