"""The two plugins under test, each on its own sandbox, and the measuring primitives.

Every command that touches networking runs inside a namespace a sandbox created: cnitool
and the plugins via ``nsenter --net=<node>``, DHCP clients via ``nsenter --net=<pod>``,
``ip -n <ns>`` for links. Nothing here changes the machine's own namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.sandbox import (
    CNITOOL,
    NODE_IP,
    ROUTER_IP,
    Daemon,
    Pod,
    Sandbox,
    SandboxError,
    dhcpd_config,
    run,
)

# The PATH a node's container runtime execs plugins with (not this shell's: a pyenv shim or
# a venv first on PATH would change which python3 runs the zipapp).
NODE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
REF_DIR = Path("/usr/lib/cni")
NET = "benchnet"
OP_TIMEOUT = 180.0


@dataclass
class Op:
    """One timed exec."""

    ms: float
    rc: int
    start: float  # perf_counter seconds
    end: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def error(self) -> str:
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1][:300] if lines else f"exit {self.rc}"

    def record(self, **extra: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"ms": round(self.ms, 3), "ok": self.ok, **extra}
        if not self.ok:
            rec["error"] = self.error()
        return rec


def timed(
    cmd: Sequence[str],
    *,
    netns_path: str,
    env: dict[str, str],
    stdin: str | None = None,
    timeout: float = OP_TIMEOUT,
) -> Op:
    """Run ``cmd`` inside the network namespace at ``netns_path`` and time the whole exec."""
    full = ["nsenter", f"--net={netns_path}", *cmd]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            full,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        end = time.perf_counter()
        return Op((end - start) * 1000, -1, start, end, "", f"timeout after {exc.timeout} s")
    end = time.perf_counter()
    return Op((end - start) * 1000, proc.returncode, start, end, proc.stdout, proc.stderr)


def together(tasks: Sequence[Callable[[], Op]]) -> list[Op]:
    """Run all tasks at once (released by a barrier) and return their Ops in order."""
    if not tasks:
        return []
    barrier = threading.Barrier(len(tasks))

    def go(task: Callable[[], Op]) -> Op:
        barrier.wait(timeout=60)
        return task()

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return list(pool.map(go, tasks))


def in_batches(tasks: Sequence[Callable[[], Op]], width: int) -> list[Op]:
    """Run tasks with at most ``width`` in flight (no barrier)."""
    with ThreadPoolExecutor(max_workers=width) as pool:
        return list(pool.map(lambda t: t(), tasks))


def wall_ms(ops: Sequence[Op]) -> float:
    return (max(o.end for o in ops) - min(o.start for o in ops)) * 1000 if ops else 0.0


# -- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    at: float  # monotonic seconds
    cpu_ticks: int  # utime + stime, all threads
    rss_kb: int
    hwm_kb: int
    fds: int
    threads: int


def sample_proc(pid: int) -> ProcSample:
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return ProcSample(
        at=at,
        cpu_ticks=ticks,
        rss_kb=int(status.get("VmRSS", "0 kB").split()[0]),
        hwm_kb=int(status.get("VmHWM", "0 kB").split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status.get("Threads", "0")),
    )


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    hz = os.sysconf("SC_CLK_TCK")
    elapsed = after.at - before.at
    return 100.0 * (after.cpu_ticks - before.cpu_ticks) / hz / elapsed if elapsed > 0 else 0.0


def reaped_cpu_ms() -> float:
    """user+sys of every child this process waited for: around one exec, its whole tree."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def machine_busy_ms() -> float:
    """CPU time the whole machine has spent busy (all CPUs, /proc/stat), in ms: what a burst
    of operations costs, whichever process or kernel thread paid. Steal (time the hypervisor
    gave another guest) is not ours and is left out, with idle and iowait."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return ticks_ms(user + nice + system + irq + softirq)


def ticks_ms(ticks: int) -> float:
    return 1000.0 * ticks / os.sysconf("SC_CLK_TCK")


def cpu_ms(before: ProcSample, after: ProcSample) -> float:
    return ticks_ms(after.cpu_ticks - before.cpu_ticks)


def daemon_pid(daemon: Daemon, needle: str) -> int:
    """The pid of the daemon's own process (`ip netns exec` execs, so it is the Popen pid)."""
    cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if needle not in cmdline:
        raise SandboxError(f"pid {daemon.pid} is {cmdline!r}, not the {needle} process")
    return daemon.pid


def spawn_in(sb: Sandbox, name: str, netns: str, cmd: list[str]) -> Daemon:
    """Start a background process inside ``netns``; the sandbox's teardown stops it."""
    log_path = sb.tmp / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Daemon(name=name, proc=proc, log_path=log_path)
    sb.daemons.append(daemon)
    return daemon


def wait_for(check: Callable[[], bool], what: str, daemon: Daemon, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not daemon.alive():
            raise SandboxError(f"{daemon.name} exited before {what}:\n{daemon.log()}")
        time.sleep(0.05)
    raise SandboxError(f"{daemon.name}: no {what} after {timeout} s:\n{daemon.log()}")


# -- the plugins under test -------------------------------------------------------------------


@dataclass
class BenchPod:
    pod: Pod
    container_id: str
    name: str
    address: str | None = None


class Side:
    """One plugin on its own sandbox, driven by cnitool inside the sandbox's node namespace."""

    def __init__(self, name: str, sb: Sandbox, plugin: dict[str, Any], cni_path: str) -> None:
        self.name = name
        self.sb = sb
        self.plugin = plugin
        self.cni_path = cni_path
        self.daemon: Daemon | None = None
        self.daemon_pid: int | None = None
        self.node_path = f"/run/netns/{sb.node}"
        self._seq = 0

    def write_conflist(self) -> None:
        self.sb.write_conflist(NET, {"cniVersion": "1.0.0", "plugins": [self.plugin]})
        self.sb.cni_cache_dir.mkdir(parents=True, exist_ok=True)

    def new_pod(self, tag: str) -> BenchPod:
        self._seq += 1
        unique = f"{tag}-{self._seq}-{secrets.token_hex(3)}"
        pod = self.sb.add_pod(f"{self.name[:3]}-{unique}")
        return BenchPod(pod=pod, container_id=f"bench-{self.name[:3]}-{unique}", name=unique)

    def env(self, bp: BenchPod) -> dict[str, str]:
        return {
            "PATH": NODE_PATH,
            "NETCONFPATH": str(self.sb.netconf_dir),
            "CNI_PATH": self.cni_path,
            "CNI_IFNAME": "eth0",
            "CNI_CONTAINERID": bp.container_id,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={bp.name}",
            "CNITOOL_CACHE_DIR": str(self.sb.cni_cache_dir),
            "CNITOOL_TIMEOUT": "120",
        }

    def cni(self, op: str, bp: BenchPod) -> Op:
        result = timed(
            [str(CNITOOL), op, NET, bp.pod.path], netns_path=self.node_path, env=self.env(bp)
        )
        if op == "add" and result.ok:
            with contextlib.suppress(ValueError, KeyError, IndexError):
                address = json.loads(result.stdout)["ips"][0]["address"]
                bp.address = str(address).split("/")[0]
        return result

    def exec_plugin(
        self, path: str, command: str, conf: dict[str, Any] | None, container_id: str = ""
    ) -> Op:
        """One bare plugin exec (no cnitool), as a runtime would run it."""
        env = {"PATH": NODE_PATH, "CNI_COMMAND": command, "CNI_PATH": self.cni_path}
        if command != "VERSION":
            env.update({"CNI_CONTAINERID": container_id, "CNI_IFNAME": "eth0", "CNI_NETNS": ""})
        stdin = json.dumps(conf) if conf is not None else '{"cniVersion":"1.0.0"}'
        return timed([path], netns_path=self.node_path, env=env, stdin=stdin, timeout=30)

    def drop_pod(self, bp: BenchPod) -> None:
        run(["ip", "netns", "delete", bp.pod.name], check=False, timeout=30)


def bridge_uplink_by_hand(sb: Sandbox) -> None:
    """What the reference needs and does not do: eth0 into cni0, address and route moved."""
    ipn = ["ip", "-n", sb.node]
    mac = json.loads(run([*ipn, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    bridge = ["type", "bridge", "stp_state", "0", "forward_delay", "0"]
    run([*ipn, "link", "add", "cni0", "address", mac, *bridge])
    run([*ipn, "link", "set", "cni0", "up"])
    run([*ipn, "addr", "del", f"{NODE_IP}/24", "dev", "eth0"])
    run([*ipn, "link", "set", "eth0", "master", "cni0"])
    run([*ipn, "addr", "add", f"{NODE_IP}/24", "dev", "cni0"])
    run([*ipn, "route", "add", "default", "via", ROUTER_IP, "dev", "cni0"])


def start_reference(sb: Sandbox) -> Side:
    """Reference bridge + dhcp daemon (own socket path) on a hand-bridged node."""
    bridge_uplink_by_hand(sb)
    sock = sb.tmp / "ref-dhcp.sock"
    if len(str(sock)) > 100:
        raise SandboxError(f"socket path {sock} is too long for a unix socket")
    daemon = spawn_in(
        sb, "ref-dhcp", sb.node, [str(REF_DIR / "dhcp"), "daemon", "-socketpath", str(sock)]
    )
    wait_for(sock.exists, f"socket {sock}", daemon)
    plugin = {
        "type": "bridge",
        "bridge": "cni0",
        "ipam": {"type": "dhcp", "daemonSocketPath": str(sock)},
    }
    side = Side("reference", sb, plugin, str(REF_DIR))
    side.daemon = daemon
    side.daemon_pid = daemon_pid(daemon, "dhcp")
    side.write_conflist()
    return side


def install_zipapp(python: str, repo: Path, bin_dir: Path) -> Path:
    """Build the `make binary` artefact straight into this run's CNI_PATH directory."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "cni-bridge-dhcp"
    subprocess.run(
        [python, str(repo / "scripts" / "build-zipapp.py"), str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


def start_ours(
    sb: Sandbox, zipapp: Path, *, log_level: str = "debug", env: dict[str, str] | None = None
) -> Side:
    """Our agent in the node namespace (``env`` added to its environment) and the zipapp in
    this sandbox's CNI_PATH dir."""
    sb.cni_bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(zipapp, sb.cni_bin_dir / "cni-bridge-dhcp")
    agent = sb.start_agent(extra_args=["--log-level", log_level], env=env)
    plugin = {
        "type": "cni-bridge-dhcp",
        "bridge": "cni0",
        "uplinkInterface": "eth0",
        "agentSocket": str(sb.agent_socket),
        "ipam": {"type": "dhcp"},
    }
    side = Side("ours", sb, plugin, str(sb.cni_bin_dir))
    side.daemon = agent
    side.daemon_pid = daemon_pid(agent, "cni_bridge_dhcp")
    side.write_conflist()
    return side


# -- DHCP servers and the bare client ---------------------------------------------------------


def start_wide_dhcpd(sb: Sandbox, lease_seconds: int) -> tuple[Daemon, Path]:
    """isc-dhcp-server on lan0 with the whole /24 as pool (252 addresses).

    testbed/sandbox.py's start_dhcpd serves 192.168.77.100-199 only, too few for 250 leases.
    """
    wide = (("192.168.77.2", "192.168.77.9"), ("192.168.77.11", "192.168.77.254"))
    daemon = sb.start_dhcpd(config=dhcpd_config(lease_seconds=lease_seconds, ranges=wide))
    return daemon, daemon.log_path


class BareClient:
    """A pod namespace plugged straight into the LAN, for timing busybox udhcpc."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.pod = sb.add_pod("bare")
        sb.attach_to_lan(self.pod)
        self.capture: subprocess.Popen[str] | None = None

    def start_capture(self) -> None:
        cmd = ["nsenter", f"--net={self.pod.path}", "tcpdump", "-i", "eth0", "-n", "-tt"]
        cmd += ["-l", "-U", "udp port 67 or udp port 68"]
        self.capture = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        time.sleep(0.5)  # tcpdump needs a moment before it sees packets

    def stop_capture(self) -> str:
        if self.capture is None:
            return ""
        time.sleep(0.3)
        self.capture.terminate()
        try:
            out, _ = self.capture.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.capture.kill()
            out, _ = self.capture.communicate(timeout=10)
        self.capture = None
        return out

    def fresh_mac(self) -> None:
        mac = "02:" + ":".join(secrets.token_hex(1) for _ in range(5))
        ipn = ["ip", "-n", self.pod.name, "link", "set", "eth0"]
        run([*ipn, "down"])
        run([*ipn, "address", mac])
        run([*ipn, "up"])

    def udhcpc(self, *extra: str) -> Op:
        self.fresh_mac()
        cmd = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-s", "/bin/true", *extra]
        return timed(cmd, netns_path=self.pod.path, env={"PATH": NODE_PATH}, timeout=30)
