"""Helpers for the reliability layer: extra daemons (custom dhcpd, the misbehaving server),
the agent in a mount namespace of its own, state-dir readers, node snapshots, process figures.

Everything runs inside the sandbox's namespaces; mounts happen only in the agent's own
mount namespace (``unshare -m --propagation slave``: nothing propagates to the host), on
paths under the test's tmp directory.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.sandbox import REPO_ROOT, Daemon, Pod, Sandbox, SandboxError, Snapshot, run
from tests.e2e.helpers import NET


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def agent_daemon(sb: Sandbox) -> Daemon:
    return [d for d in sb.daemons if d.name == "agent"][-1]


def kill_agent(sb: Sandbox) -> None:
    """SIGKILL: the agent gets no chance to tidy anything."""
    agent = agent_daemon(sb)
    agent.proc.kill()
    agent.proc.wait(10)


def start_agent_in_mount_ns(sb: Sandbox, setup: str) -> Daemon:
    """The agent in a mount namespace of its own, after running ``setup`` (sh) there (e.g.
    mounting a small tmpfs on the state dir). Returns once its socket exists.

    Propagation "slave": mounts made in there never reach the host, while the host's new
    /run/netns/<pod> bind mounts still reach the agent (it opens pod namespaces by path
    for renewals and RELEASE; with "private" it would find them empty).
    """
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    sb.agent_socket.unlink(missing_ok=True)
    agent = [
        sys.executable,
        "-m",
        "cni_bridge_dhcp",
        "daemon",
        "--socket",
        str(sb.agent_socket),
        "--state-dir",
        str(sb.state_dir),
        "--log-file",
        str(sb.agent_log),
        "--log-level",
        "debug",
    ]
    cmd = ["unshare", "-m", "--propagation", "slave", "sh", "-ec", f'{setup}\nexec "$@"', "sh"]
    daemon = sb._spawn(
        "agent",
        [*cmd, *agent],
        netns=sb.node,
        log_path=sb.tmp / "agent.stderr",
        env={"PYTHONUNBUFFERED": "1"},
    )
    sb._wait_until(daemon, sb.agent_socket.exists, f"socket {sb.agent_socket} exists")
    return daemon


def in_agent_mounts(sb: Sandbox, script: str, *, check: bool = True) -> str:
    """Run a shell script in the agent's own mount namespace; returns stdout."""
    pid = agent_daemon(sb).pid
    proc = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "--", "sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise SandboxError(f"in agent mount ns: {script}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


# -- DHCP servers --------------------------------------------------------------------------


def stop_named(sb: Sandbox, name: str) -> None:
    for daemon in sb.daemons:
        if daemon.name == name:
            daemon.stop()


def start_fake_dhcp(sb: Sandbox, name: str = "fakedhcp", **behaviour: Any) -> Path:
    """testbed/fakedhcp.py in the lan namespace; returns its JSON-lines log path."""
    log = sb.tmp / f"{name}.jsonl"
    conf = sb.tmp / f"{name}.json"
    conf.write_text(json.dumps({"log": str(log), **behaviour}))
    cmd = [sys.executable, "-m", "testbed.fakedhcp", str(conf)]
    daemon = sb._spawn(name, cmd, netns=sb.lan, log_path=sb.tmp / f"{name}.log")
    sb._wait_until(daemon, lambda: log.exists() and "started" in log.read_text(), "fakedhcp up")
    return log


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# -- agent state ---------------------------------------------------------------------------


def journal(sb: Sandbox) -> list[dict[str, Any]]:
    """The lease journal's records (state/leases/*.json), as the agent wrote them."""
    out = []
    for path in sorted((sb.state_dir / "leases").glob("*.json")):
        out.append(json.loads(path.read_text()))
    return out


def journal_by_key(sb: Sandbox) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in journal(sb)}


def state_files(sb: Sandbox) -> list[str]:
    """Every file under the state dir's leases/ and attachments/ (temporaries included)."""
    found: list[str] = []
    for sub in ("leases", "attachments"):
        d = sb.state_dir / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}" for p in sorted(d.iterdir())]
    return found


def lease_key(pod: Pod, ifname: str = "eth0") -> str:
    from tests.e2e.helpers import container_id

    return f"{NET}/{container_id(pod)}/{ifname}"


# -- namespaces ----------------------------------------------------------------------------

_SNAPSHOT = (
    "import json, sys; sys.path.insert(0, {root!r}); "
    "from testbed.sandbox import snapshot_root; print(json.dumps(snapshot_root()))"
)


def netns_snapshot(netns: str) -> Snapshot:
    """links, addresses, routes, rules, iptables (legacy+nft), nft ruleset, sysctls of
    ``netns``: the same snapshot the root-namespace guard takes, taken inside it."""
    code = _SNAPSHOT.format(root=str(REPO_ROOT))
    out = run([sys.executable, "-c", code], netns=netns, timeout=60).stdout
    snap: Snapshot = json.loads(out)
    return snap


def veths(netns: str) -> list[str]:
    """Host ends of pod veths (the agent names them veth<hex>) in ``netns``."""
    out = run(["ip", "-j", "link", "show", "type", "veth"], netns=netns).stdout
    return [link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith("veth")]


def pod_ipv4(pod: Pod, ifname: str = "eth0") -> list[str]:
    out = run(["ip", "-j", "-4", "addr", "show", "dev", ifname], netns=pod.name, check=False)
    if out.returncode != 0:
        return []
    return [
        f"{a['local']}/{a['prefixlen']}"
        for i in json.loads(out.stdout or "[]")
        for a in i.get("addr_info", [])
    ]


def firewall_text(netns: str) -> str:
    """nft ruleset + iptables-legacy-save + iptables-nft-save, counters stripped."""
    from testbed.sandbox import _normalize_xtables

    parts = []
    for cmd in (["nft", "list", "ruleset"], ["iptables-legacy-save"], ["iptables-nft-save"]):
        text = run(cmd, netns=netns, check=False).stdout
        parts.append("\n".join(_normalize_xtables(text)) if "save" in cmd[0] else text)
    return "\n".join(parts)


# -- process figures -----------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
