#!/usr/bin/env python3
"""`make bench`: cni-bridge-dhcp against the reference bridge + dhcp plugins, one run.

Builds two identical sandboxes (a LAN namespace with dnsmasq, a node namespace whose eth0
is bridged into cni0), one per plugin, and alternates operations between them; then a third
sandbox with isc-dhcp-server and short leases for the agent's resource use. Writes
results/bench-<time>.md and .json; a full run also copies the markdown to docs/BENCH.md.
Needs root; touches nothing outside the namespaces it creates.

Usage: bench.py [--quick] [--results-dir DIR] [--docs PATH | --no-docs]
       bench.py --render RESULTS.json      (re-render the markdown of a stored run)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fixture import (  # noqa: E402
    NODE_PATH,
    REF_DIR,
    BareClient,
    BenchPod,
    Op,
    Side,
    cpu_ms,
    cpu_percent,
    in_batches,
    install_zipapp,
    machine_busy_ms,
    reaped_cpu_ms,
    sample_proc,
    start_ours,
    start_reference,
    start_wide_dhcpd,
    ticks_ms,
    timed,
    together,
    wall_ms,
)
from bench_stats import (  # noqa: E402
    count_server_events,
    other_runs,
    parse_agent_add_steps,
    parse_agent_del_steps,
    parse_agent_totals,
    parse_dhcp_wire,
    parse_reference_retries,
    render_report,
)
from bench_targets import (  # noqa: E402
    section_breakdown,
    section_concurrency,
    section_fast,
    section_floors,
    section_profile,
    section_soak,
    section_targets,
)

from cni_bridge_dhcp.agent.datapath.slaac import QUIET_LAN_CERTAIN  # noqa: E402
from testbed.sandbox import (  # noqa: E402
    NETNS_DIR,
    Daemon,
    Sandbox,
    diff_snapshots,
    ensure_cnitool,
    snapshot_root,
)

# dnsmasq's default pool (.100-.199) is 100 addresses and the reference never gets a lease
# released, so both LANs get a second range: 180 addresses, identical flags on both sides.
EXTRA_RANGE = "--dhcp-range=192.168.77.20,192.168.77.99,255.255.255.0,2m"
REF_SOCKET_DEFAULT = Path("/run/cni/dhcp.sock")


@dataclass(frozen=True)
class Plan:
    sequential: int
    concurrent: tuple[int, ...]
    exec_runs: int
    ping_adds: int
    levels: tuple[int, ...]
    lease_seconds: int
    fast_adds: int
    profile_ops: int
    cri_pods: int
    veth_dels: int
    batch: int = 20  # issue 16: 200 pods added 20 at a time

    @property
    def window_s(self) -> int:
        # one renewal period: every held lease renews about once in the window
        return self.lease_seconds // 2


FULL = Plan(20, (1, 10, 25, 50), 50, 5, (0, 50, 250), 120, 10, 20, 12, 30)
QUICK = Plan(3, (1, 5), 5, 1, (0, 5, 10), 30, 3, 3, 3, 5)
BEFORE = ROOT / "docs" / "bench-before.json"
AGENT_PROBE = ROOT / "scripts" / "agent_probe"
# waits of an idle event loop / thread, not work: left out of the profile table
IDLE_WAITS = (
    "<method 'poll' of 'select.epoll' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- machine and versions ---------------------------------------------------------------------


def _out(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{exc}>"
    return (proc.stdout or proc.stderr).strip()


def _dpkg(pkg: str) -> str:
    return _out(["dpkg-query", "-W", "-f", "${Version}", pkg]) or "not installed"


def machine_info() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    git = _out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return {
        "cni-bridge-dhcp (git)": git,
        "python (agent, venv)": platform.python_version(),
        "python3 running the zipapp": _out(["/usr/bin/python3", "--version"]),
        "pyroute2": version("pyroute2"),
        "dnsmasq": _out(["dnsmasq", "--version"]).splitlines()[0],
        "isc-dhcp-server": _dpkg("isc-dhcp-server"),
        "containernetworking-plugins": _dpkg("containernetworking-plugins"),
        "libcni (cnitool)": _dpkg("golang-github-appc-cni-dev"),
        "busybox": _dpkg("busybox"),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def other_sandboxes(mine: set[str]) -> int:
    if not NETNS_DIR.is_dir():
        return 0
    return other_runs((p.name for p in NETNS_DIR.iterdir()), mine)


class LogTail:
    """The text a log file gained since the last call (or since creation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_text(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        return data.decode(errors="replace")


# -- phases -----------------------------------------------------------------------------------


def daemon_ticks(side: Side) -> int:
    return sample_proc(side.daemon_pid).cpu_ticks if side.daemon_pid is not None else 0


def seq_op(side: Side, op: str, bp: BenchPod) -> dict[str, Any]:
    ticks = daemon_ticks(side)
    tree = reaped_cpu_ms()
    result = side.cni(op, bp)
    tree = reaped_cpu_ms() - tree
    ticks = daemon_ticks(side) - ticks
    rec = result.record(
        container=bp.container_id, daemon_cpu_ms=ticks_ms(ticks), exec_cpu_ms=round(tree, 2)
    )
    if op == "add":
        rec["address"] = bp.address
    if not result.ok:
        say(f"  {side.name} {op} {bp.name} FAILED: {result.error()}")
    return rec


def leases_left(sb: Sandbox, addresses: list[str]) -> dict[str, int]:
    from testbed.sandbox import parse_dnsmasq_leases

    time.sleep(1.0)  # dnsmasq rewrites its lease file right after a RELEASE; let it land
    held = {row["ip"] for row in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}
    return {"added": len(addresses), "left": len(set(addresses) & held)}


def phase_warmup(sides: list[Side]) -> dict[str, Any]:
    out = {}
    for side in sides:
        bp = side.new_pod("warm")
        add, delete = side.cni("add", bp), None
        if add.ok:
            delete = side.cni("del", bp)
        side.drop_pod(bp)
        if not add.ok or delete is None or not delete.ok:
            raise RuntimeError(
                f"{side.name}: warm-up failed: {add.error() if not add.ok else delete}"
            )
        out[side.name] = {"add_ms": round(add.ms, 3), "del_ms": round(delete.ms, 3)}
        say(f"  warm-up {side.name}: first ADD {add.ms:.0f} ms, DEL {delete.ms:.0f} ms")
    return out


def phase_exec(ref: Side, ours: Side, runs: int) -> dict[str, list[float]]:
    zipapp = str(ours.sb.cni_bin_dir / "cni-bridge-dhcp")
    ours_conf = {"cniVersion": "1.0.0", "name": "benchnet", **ours.plugin}
    status_conf = {**ours_conf, "cniVersion": "1.1.0"}
    ref_conf = {"cniVersion": "1.0.0", "name": "benchnet", **ref.plugin}
    cases: dict[str, Any] = {
        "nsenter true (wrapper baseline)": lambda i: ours_true(ours),
        "ours VERSION": lambda i: ours.exec_plugin(zipapp, "VERSION", None),
        "reference bridge VERSION": lambda i: ref.exec_plugin(
            str(REF_DIR / "bridge"), "VERSION", None
        ),
        "reference dhcp VERSION": lambda i: ref.exec_plugin(str(REF_DIR / "dhcp"), "VERSION", None),
        "ours STATUS (agent round trip)": lambda i: ours.exec_plugin(zipapp, "STATUS", status_conf),
        "ours DEL, unknown container (agent round trip)": lambda i: ours.exec_plugin(
            zipapp, "DEL", ours_conf, f"bench-unknown-{i}"
        ),
        "reference dhcp DEL, unknown container (daemon round trip)": lambda i: ref.exec_plugin(
            str(REF_DIR / "dhcp"), "DEL", ref_conf, f"bench-unknown-{i}"
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    errors: dict[str, str] = {}
    for i in range(runs):
        for name, case in cases.items():
            op: Op = case(i)
            if op.ok:
                samples[name].append(round(op.ms, 3))
            else:
                errors[name] = op.error()
    for name, err in errors.items():
        say(f"  exec {name} failed at least once: {err}")
    return samples


def ours_true(side: Side) -> Op:
    return timed(["true"], netns_path=side.node_path, env={"PATH": NODE_PATH})


def phase_sequential(
    ref: Side, ours: Side, bare: dict[str, BareClient], n: int, data: dict[str, Any]
) -> None:
    seq: dict[str, Any] = {"iterations": n, "add": {"reference": [], "ours": []}}
    seq["del"] = {"reference": [], "ours": []}
    udhcpc: list[float] = []
    udhcpc_arp: list[float] = []
    bare_fail: dict[str, list[str]] = {"udhcpc": [], "udhcpc_arp100": []}
    pods: dict[str, list[BenchPod]] = {"reference": [], "ours": []}
    for client in bare.values():
        client.start_capture()
    for i in range(n):
        order = (ref, ours) if i % 2 == 0 else (ours, ref)
        for side in order:
            bp = side.new_pod(f"s{i}")
            pods[side.name].append(bp)
            seq["add"][side.name].append(seq_op(side, "add", bp))
        for side in order:
            client = bare[side.name]
            for extra, into, kind in (
                ((), udhcpc, "udhcpc"),
                (("-a100",), udhcpc_arp, "udhcpc_arp100"),
            ):
                got = client.udhcpc(*extra)
                if got.ok:
                    into.append(round(got.ms, 3))
                else:
                    bare_fail[kind].append(got.error())
        if i % 5 == 4:
            say(f"  {i + 1}/{n} ADD pairs")
    wire_text = "\n".join(client.stop_capture() for client in bare.values())
    for i in range(n):
        order = (ref, ours) if i % 2 == 0 else (ours, ref)
        for side in order:
            bp = pods[side.name][i]
            seq["del"][side.name].append(seq_op(side, "del", bp))
            side.drop_pod(bp)
    seq["leases_left"] = {
        side.name: leases_left(side.sb, [bp.address for bp in pods[side.name] if bp.address])
        for side in (ref, ours)
    }
    data["sequential"] = seq
    data["bare_dhcp"] = {
        "udhcpc": udhcpc,
        "udhcpc_arp100": udhcpc_arp,
        "failures": bare_fail,
        "wire": parse_dhcp_wire(wire_text),
    }
    # where our DELs' time went, from the agent's own log (the ADD milestones are debug
    # lines, which this info-level agent does not write: phase_breakdown)
    data["agent_steps"] = {"del": _op_steps(ours, seq["del"]["ours"], parse_agent_del_steps)}
    assert ref.daemon is not None
    data["reference_retries"] = {
        "adds": n + 1,  # the warm-up ADD is in the same daemon log
        "waits_ms": parse_reference_retries(ref.daemon.log()),
    }


def phase_concurrent(ref: Side, ours: Side, sizes: tuple[int, ...], data: dict[str, Any]) -> None:
    runs: list[dict[str, Any]] = []
    context: dict[str, Any] = {}
    for k, n in enumerate(sizes):
        order = (ref, ours) if k % 2 == 0 else (ours, ref)
        for side in order:
            pods = [side.new_pod(f"c{n}") for _ in range(n)]
            server_log = LogTail(side.sb.tmp / "dnsmasq.log")
            ticks = daemon_ticks(side)
            adds = together([partial(side.cni, "add", bp) for bp in pods])
            after_adds = daemon_ticks(side)
            add_cpu = ticks_ms(after_adds - ticks)
            add_events = count_server_events(server_log.new_text())
            if n == max(sizes) and side.daemon_pid is not None:
                s = sample_proc(side.daemon_pid)
                label = "our agent" if side.name == "ours" else "reference dhcp daemon"
                context[f"{label}, {n} leases"] = {
                    "rss_kb": s.rss_kb,
                    "fds": s.fds,
                    "threads": s.threads,
                }
            busy, tree = machine_busy_ms(), reaped_cpu_ms()
            dels = together([partial(side.cni, "del", bp) for bp in pods])
            busy, tree = machine_busy_ms() - busy, reaped_cpu_ms() - tree
            del_cpu = ticks_ms(daemon_ticks(side) - after_adds)
            del_events = count_server_events(server_log.new_text())
            for bp in pods:
                side.drop_pod(bp)
            run: dict[str, Any] = {
                "n": n,
                "side": side.name,
                "add": {
                    "ops": [op.record() for op in adds],
                    "wall_ms": round(wall_ms(adds), 3),
                    "server": add_events,
                    "daemon_cpu_ms": add_cpu,
                },
                "del": {
                    "ops": [op.record() for op in dels],
                    "wall_ms": round(wall_ms(dels), 3),
                    "server": del_events,
                    "daemon_cpu_ms": del_cpu,
                    "machine_cpu_ms": round(busy, 1),  # every CPU, every process
                    "cpus": os.cpu_count() or 1,
                    "exec_cpu_ms": round(tree, 1),  # nsenter, cnitool, the plugin execs
                },
            }
            if side is ours:
                log_text = ours.sb.agent_logs()
                cids = [bp.container_id for bp in pods]
                for op_name, key in (("ADD", "add"), ("DEL", "del")):
                    totals = parse_agent_totals(log_text, op_name, cids)
                    run[key]["agent_ms"] = [round(v, 3) for v in totals.values()]
            fails = sum(1 for op in adds if not op.ok) + sum(1 for op in dels if not op.ok)
            say(
                f"  {n} concurrent, {side.name}: ADD wall {wall_ms(adds):.0f} ms, "
                f"DEL wall {wall_ms(dels):.0f} ms, {fails} failures"
            )
            runs.append(run)
    data["concurrent"] = runs
    data["rss_context"] = context


def _exec_floor_module() -> Any:
    """scripts/exec-floor.py (a file name with a dash), for its cases and importtime."""
    spec = importlib.util.spec_from_file_location("exec_floor", ROOT / "scripts" / "exec-floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def phase_exec_floor(ours: Side, runs: int, data: dict[str, Any]) -> None:
    """Target 1: exec-floor.py's cases, interleaved, straight execs against the live agent."""
    ef = _exec_floor_module()
    zipapp = ours.sb.cni_bin_dir / "cni-bridge-dhcp"
    todo = ef.cases(zipapp, ours.sb.agent_socket, "/usr/bin/python3")
    for _name, cmd, env, stdin in todo:  # once untimed: warm the page cache
        ef.run_once(cmd, env, stdin)
    ms: dict[str, list[float]] = {name: [] for name, *_ in todo}
    for _ in range(runs):
        for name, cmd, env, stdin in todo:
            ms[name].append(round(ef.run_once(cmd, env, stdin)[0], 3))
    imports = {name: ef.importtime(zipapp, env, stdin, 8) for name, _, env, stdin in todo[2:]}
    data["exec_floor"] = {"runs": runs, "ms": ms, "importtime": imports}


def phase_veth_floor(ours: Side, n: int, data: dict[str, Any]) -> None:
    """Target 2's kernel floor: `ip link del` of one veth pair in the node namespace."""
    node = ours.sb.node
    dels: list[float] = []
    shows: list[float] = []
    for i in range(n):
        name = f"vfl{i}"
        subprocess.run(
            ["ip", "-n", node, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
            check=True,
            timeout=30,
        )
        for cmd, into in (
            (["ip", "-n", node, "link", "show", "lo"], shows),
            (["ip", "-n", node, "link", "del", name], dels),
        ):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, timeout=30, capture_output=True)
            into.append(round((time.perf_counter() - start) * 1000, 3))
    data["veth_floor"] = {"ip link del (veth pair)": dels, "ip link show lo (ip's exec)": shows}


# target 6's netconf variants: name -> what they add to ipam
FAST_VARIANTS: dict[str, dict[str, Any]] = {
    "arpProbeWait 0": {"arpProbeWait": 0},
    "arpProbeWait 0, ipv6 off": {"arpProbeWait": 0, "ipv6": "off"},
}


def phase_fast(ours: Side, n: int, data: dict[str, Any]) -> None:
    """Target 6: our ADD/DEL with `ipam.arpProbeWait: 0` (and with ipv6 off as well)."""
    original = ours.plugin
    runs: dict[str, Any] = {}
    try:
        for name, extra in FAST_VARIANTS.items():
            ours.plugin = {**original, "ipam": {**original["ipam"], **extra}}
            ours.write_conflist()
            adds, dels = [], []
            for i in range(n):
                bp = ours.new_pod(f"f{i}")
                adds.append(seq_op(ours, "add", bp))
                dels.append(seq_op(ours, "del", bp))
                ours.drop_pod(bp)
            runs[name] = {"add": adds, "del": dels, "steps": {}}  # phase_breakdown
    finally:
        ours.plugin = original
        ours.write_conflist()
    data["fast_add"] = runs


StepParser = Callable[[str, Iterable[str]], dict[str, dict[str, float]]]


def _op_steps(
    side: Side, records: list[dict[str, Any]], parse: StepParser
) -> dict[str, dict[str, float]]:
    """Each operation's steps from ``side``'s agent log, with its wall and the outside part."""
    walls = {r["container"]: r["ms"] for r in records if r["ok"]}
    steps = parse(side.sb.agent_logs(), walls)
    for cid, st in steps.items():
        st["wall"] = walls[cid]
        st["outside_agent"] = walls[cid] - st["total"]
    return {cid: {k: round(v, 3) for k, v in st.items()} for cid, st in steps.items()}


def phase_breakdown(zipapp: Path, n: int, tmp: Path, data: dict[str, Any]) -> None:
    """Where one ADD's time goes, for the breakdown tables and picture: the OFFER, ACK and
    ARP milestones are debug lines, and the headline agent runs at info as the DaemonSet
    does. So n sequential ADDs (default ipam, then each arpProbeWait 0 variant) run on an
    agent of their own at debug level, in a sandbox of their own."""
    sb = Sandbox(tmp / "steps")
    try:
        sb.setup()
        sb.start_dnsmasq(no_ping=True, extra=[EXTRA_RANGE])
        ours = start_ours(sb, zipapp, log_level="debug")
        original = ours.plugin
        variants = {"": {}, **{k: v for k, v in FAST_VARIANTS.items() if k in data["fast_add"]}}
        warm = ours.new_pod("steps-warm")  # the takeover and lazy imports stay out
        seq_op(ours, "add", warm)
        seq_op(ours, "del", warm)
        ours.drop_pod(warm)
        # As on the headline agent, which has been up for minutes: on this IPv4-only LAN an
        # ADD stops waiting for a router advertisement once the LAN has been quiet this long.
        time.sleep(QUIET_LAN_CERTAIN + 0.5)
        for name, extra in variants.items():
            ours.plugin = {**original, "ipam": {**original["ipam"], **extra}}
            ours.write_conflist()
            adds = []
            for i in range(n):
                bp = ours.new_pod(f"steps{i}")
                adds.append(seq_op(ours, "add", bp))
                seq_op(ours, "del", bp)
                ours.drop_pod(bp)
            steps = _op_steps(ours, adds, parse_agent_add_steps)
            if name:
                data["fast_add"][name]["steps"] = steps
            else:
                data.setdefault("agent_steps", {})["add"] = steps
    finally:
        sb.teardown()


def phase_profile(zipapp: Path, n: int, tmp: Path, data: dict[str, Any]) -> None:
    """cProfile of the agent's event-loop thread over n ADD/DEL (own sandbox: it slows)."""
    import pstats

    out = tmp / "agent.pstats"
    sb = Sandbox(tmp / "prof")
    try:
        sb.setup()
        sb.start_dnsmasq(no_ping=True, extra=[EXTRA_RANGE])
        env = {"PYTHONPATH": str(AGENT_PROBE), "CBD_PROFILE": str(out)}
        ours = start_ours(sb, zipapp, log_level="info", env=env)
        assert ours.daemon_pid is not None
        for i in range(n + 1):
            if i == 1:  # after one warm-up pair (takeover, lazy imports): start profiling
                os.kill(ours.daemon_pid, signal.SIGUSR2)
            bp = ours.new_pod(f"prof{i}")
            ours.cni("add", bp)
            ours.cni("del", bp)
            ours.drop_pod(bp)
        os.kill(ours.daemon_pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
        rows = []
        for (path, line, func), (_cc, calls, own, cum, _callers) in stats.items():
            if func in IDLE_WAITS:
                continue
            where = path.split("site-packages/")[-1].split("cni_bridge_dhcp/")[-1]
            rows.append([f"{where}:{line}({func})", calls, own * 1000, cum * 1000])
        rows.sort(key=lambda r: -r[2])
        data["agent_profile"] = {
            "ops": n,
            "top": [[r[0], r[1], round(r[2], 1), round(r[3], 1)] for r in rows[:15]],
        }
    finally:
        sb.teardown()


def phase_cri(pods: int, tmp: Path, data: dict[str, Any]) -> None:
    """Target 4: containerd CRI RunPodSandbox/StopPodSandbox, both plugins (bench_cri)."""
    import bench_cri

    try:
        data["cri"] = bench_cri.measure(pods, tmp / "cri")
    except Exception as exc:  # a runtime problem must not lose the rest of the run
        data["cri"] = {"error": f"{type(exc).__name__}: {exc}"}
        say(f"  CRI phase failed: {exc}")


def latest_soak(results_dir: Path) -> dict[str, Any] | None:
    """The newest `make soak` summary in results/ (target 7 is its own, long run)."""
    files = sorted(results_dir.glob("soak-*.json"))
    if not files:
        return None
    soak: dict[str, Any] = json.loads(files[-1].read_text())
    samples = soak.pop("samples", None) or []
    if len(samples) >= 4:  # the trend at the end: is it still growing, or flat?
        half = samples[len(samples) // 2]
        soak["second_half"] = (
            f"+{samples[-1]['VmRSS'] - half['VmRSS']} KiB over cycles "
            f"{half['cycles']}-{samples[-1]['cycles']}"
        )
    meta = soak.pop("meta", {})
    soak["time"] = meta.get("time")
    soak["agent_env"] = meta.get("agent_env", {})
    with contextlib.suppress(ValueError):
        soak["file"] = str(files[-1].relative_to(ROOT))
    soak.setdefault("file", str(files[-1]))
    return soak


def restart_dnsmasq(sb: Sandbox, old: Daemon, *, no_ping: bool) -> Daemon:
    old.stop()
    return sb.start_dnsmasq(no_ping=no_ping, extra=[EXTRA_RANGE])


def phase_ping(ref: Side, ours: Side, n: int, data: dict[str, Any]) -> None:
    ping: dict[str, Any] = {
        "add": {"reference": [], "ours": []},
        "del": {"reference": [], "ours": []},
    }
    for i in range(n):
        order = (ref, ours) if i % 2 == 0 else (ours, ref)
        for side in order:
            bp = side.new_pod(f"p{i}")
            ping["add"][side.name].append(seq_op(side, "add", bp))
            ping["del"][side.name].append(seq_op(side, "del", bp))
            side.drop_pod(bp)
    data["ping_check"] = ping


def phase_resources(zipapp: Path, plan: Plan, tmp: Path, data: dict[str, Any]) -> None:
    res: dict[str, Any] = {
        "lease_seconds": plan.lease_seconds,
        "log_level": "info",
        "levels": [],
        "batches": [],
        "batch": plan.batch,
    }
    data["resources"] = res
    sb = Sandbox(tmp / "res")
    try:
        sb.setup()
        _dhcpd, dhcpd_log = start_wide_dhcpd(sb, plan.lease_seconds)
        # info, as an operator would run it (debug logs every DHCP packet)
        ours = start_ours(sb, zipapp, log_level="info")
        assert ours.daemon_pid is not None
        pid = ours.daemon_pid
        warm = ours.new_pod("warm")
        for op in ("add", "del"):
            got = ours.cni(op, warm)
            if not got.ok:
                raise RuntimeError(f"resource sandbox warm-up {op} failed: {got.error()}")
        ours.drop_pod(warm)
        held: list[BenchPod] = []
        for level in plan.levels:
            missing = level - len(held)
            if missing > 0:
                pods = [ours.new_pod(f"r{level}") for _ in range(missing)]
                ops = in_batches([partial(ours.cni, "add", bp) for bp in pods], plan.batch)
                res["batches"].append(
                    {
                        "op": f"ADD to {level}",
                        "count": missing,
                        "failures": sum(1 for o in ops if not o.ok),
                        "wall_ms": round(wall_ms(ops), 3),
                        "ms": [round(o.ms, 3) for o in ops if o.ok],
                        "errors": sorted({o.error() for o in ops if not o.ok}),
                    }
                )
                held += [bp for bp, o in zip(pods, ops, strict=True) if o.ok]
                # The resource figures are about leases held: retry what failed (the
                # failures above stay counted).
                failed = [bp for bp, o in zip(pods, ops, strict=True) if not o.ok]
                for _ in range(2):
                    if not failed:
                        break
                    again = in_batches([partial(ours.cni, "add", bp) for bp in failed], plan.batch)
                    held += [bp for bp, o in zip(failed, again, strict=True) if o.ok]
                    failed = [bp for bp, o in zip(failed, again, strict=True) if not o.ok]
                res["batches"][-1]["failed_after_retries"] = len(failed)
            time.sleep(2)
            acks_before = dhcpd_log.read_text(errors="replace").count("DHCPACK")
            before = sample_proc(pid)
            say(f"  {len(held)} leases held: measuring {plan.window_s} s")
            time.sleep(plan.window_s)
            after = sample_proc(pid)
            acks = dhcpd_log.read_text(errors="replace").count("DHCPACK") - acks_before
            res["levels"].append(
                {
                    "leases": len(held),
                    "target_leases": level,
                    "rss_kb": after.rss_kb,
                    "hwm_kb": after.hwm_kb,
                    "cpu_pct": round(cpu_percent(before, after), 3),
                    "cpu_ms": round(cpu_ms(before, after), 1),
                    "renewals": acks,
                    "fds": after.fds,
                    "threads": after.threads,
                    "window_s": round(after.at - before.at, 1),
                    "load_after": loadavg(),
                }
            )
        if held:
            ops = in_batches([partial(ours.cni, "del", bp) for bp in held], plan.batch)
            res["batches"].append(
                {
                    "op": "DEL all",
                    "count": len(held),
                    "failures": sum(1 for o in ops if not o.ok),
                    "wall_ms": round(wall_ms(ops), 3),
                    "ms": [round(o.ms, 3) for o in ops if o.ok],
                    "errors": sorted({o.error() for o in ops if not o.ok}),
                }
            )
            after_del = sample_proc(pid)
            res["after_del"] = {"rss_kb": after_del.rss_kb, "fds": after_del.fds}
    finally:
        sb.teardown()


# -- main -------------------------------------------------------------------------------------


def write_results(data: dict[str, Any], results_dir: Path, docs: Path | None) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = data["meta"]["started"].replace(":", "").replace("-", "")[:15]
    base = results_dir / f"bench-{stamp}{'-quick' if data['meta'].get('quick') else ''}"
    json_path = base.with_suffix(".json")
    with contextlib.suppress(ValueError):
        json_path = json_path.relative_to(ROOT)
    data["meta"]["json_file"] = str(json_path)
    data["soak"] = latest_soak(results_dir)
    before = load_before()
    data["pictures"] = []
    for out_dir in [results_dir] + ([docs.parent] if docs is not None else []):
        data["pictures"] = make_pictures(data, before, out_dir)
    base.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    report = full_report(data, before)
    base.with_suffix(".md").write_text(report)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(report)
    return base.with_suffix(".md")


def load_before() -> dict[str, float] | None:
    """The 'before' ADD breakdown: docs/bench-before.json (committed, see its source)."""
    if not BEFORE.exists():
        return None
    found: dict[str, float] = json.loads(BEFORE.read_text()).get("add_breakdown") or {}
    return found or None


def make_pictures(data: dict[str, Any], before: dict[str, float] | None, out: Path) -> list[str]:
    try:
        import bench_plots
    except ImportError as exc:  # matplotlib is in the dev extra; say so in the report
        say(f"  no pictures: {exc}")
        return []
    return bench_plots.draw(data, before, out)


def full_report(data: dict[str, Any], before: dict[str, float] | None) -> str:
    import bench_cri

    cri = data.get("cri", {})
    if "ms" in cri:
        cri_text = bench_cri.render(cri).rstrip()
    elif cri:
        cri_text = f"{bench_cri.SECTION}\n\nNot measured: {cri.get('error')}"
    else:
        cri_text = ""
    extra = [
        section_floors(data),
        section_fast(data),
        section_profile(data),
        cri_text,
        section_soak(data),
    ]
    return render_report(
        data,
        targets=section_targets(data)
        + "\n\n"
        + section_breakdown(data, before)
        + "\n\n"
        + section_concurrency(data),
        extra=extra,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so every finally (teardown) still runs


def bench(plan: Plan, quick: bool, argv: list[str]) -> dict[str, Any]:
    started = time.time()
    mine: set[str] = set()
    data: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quick": quick,
            "command": "make bench" if not argv else "scripts/bench.py " + " ".join(argv),
            "plan": plan.__dict__,
            "machine": machine_info(),
            "versions": versions(),
            "load": {"start": loadavg()},
            "dnsmasq_flags": f"--no-ping (headline) / default ping check; lease 2m; pool "
            f".100-.199 plus {EXTRA_RANGE}",
        },
        "notes": [],
    }
    notes: list[str] = data["notes"]
    ref_socket_existed = REF_SOCKET_DEFAULT.exists()
    root_before = snapshot_root()
    ensure_cnitool()
    tmp = Path(tempfile.mkdtemp(prefix="cbd-bench-"))
    sandboxes: list[Sandbox] = []
    try:
        zipapp = install_zipapp(sys.executable, ROOT, tmp / "artefact")
        sb_ref, sb_ours = Sandbox(tmp / "ref"), Sandbox(tmp / "ours")
        sandboxes += [sb_ref, sb_ours]
        for sb in sandboxes:
            sb.setup()
            mine.add(sb.prefix)
        data["meta"]["other_sandboxes"] = {"start": other_sandboxes(mine)}
        dnsmasq = {
            "reference": sb_ref.start_dnsmasq(no_ping=True, extra=[EXTRA_RANGE]),
            "ours": sb_ours.start_dnsmasq(no_ping=True, extra=[EXTRA_RANGE]),
        }
        ref = start_reference(sb_ref)
        ours = start_ours(sb_ours, zipapp, log_level="info")  # the DaemonSet default
        bare = {"reference": BareClient(sb_ref), "ours": BareClient(sb_ours)}
        say("warm-up (first ADD/DEL per node)")
        data["warmup"] = phase_warmup([ref, ours])
        say(f"plugin exec cost, {plan.exec_runs} rounds")
        data["exec"] = phase_exec(ref, ours, plan.exec_runs)
        say(f"exec floor (python3 -I -S -c pass), {plan.exec_runs} rounds; veth delete floor")
        phase_exec_floor(ours, plan.exec_runs, data)
        phase_veth_floor(ours, plan.veth_dels, data)
        say(f"sequential ADD/DEL, {plan.sequential} per plugin, with udhcpc")
        phase_sequential(ref, ours, bare, plan.sequential, data)
        say(f"concurrent ADD/DEL {plan.concurrent}")
        phase_concurrent(ref, ours, plan.concurrent, data)
        say(f"ours with arpProbeWait 0: {plan.fast_adds} ADD/DEL per netconf")
        phase_fast(ours, plan.fast_adds, data)
        say(f"dnsmasq ping check: {plan.ping_adds} ADD/DEL per plugin")
        for side in (ref, ours):
            dnsmasq[side.name] = restart_dnsmasq(side.sb, dnsmasq[side.name], no_ping=False)
        phase_ping(ref, ours, plan.ping_adds, data)
        data["meta"]["other_sandboxes"]["end"] = other_sandboxes(mine)
        for sb in sandboxes:
            sb.teardown()
        say(f"agent resources with {plan.levels} leases on isc-dhcp-server")
        phase_resources(zipapp, plan, tmp, data)
        say(f"where an ADD's time goes: {plan.profile_ops} ADDs per netconf, debug-level agent")
        try:
            phase_breakdown(zipapp, plan.profile_ops, tmp, data)
        except Exception as exc:  # an extra like the profile: keep the run's figures
            say(f"  breakdown failed: {exc}")
        say(f"agent under cProfile: {plan.profile_ops} ADD/DEL")
        try:
            phase_profile(zipapp, plan.profile_ops, tmp, data)
        except Exception as exc:  # a profile is an extra: keep the run's figures
            data["agent_profile"] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"  profile failed: {exc}")
        say(f"containerd CRI: {plan.cri_pods} pods per plugin")
        phase_cri(plan.cri_pods, tmp, data)
    finally:
        for sb in sandboxes:
            with contextlib.suppress(Exception):
                sb.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    problems = diff_snapshots(root_before, snapshot_root())
    data["meta"]["root_namespace"] = (
        "unchanged (links, addresses, routes, rules, iptables/nft, sysctls compared)"
        if not problems
        else "CHANGED: " + "; ".join(problems)
    )
    if not ref_socket_existed and REF_SOCKET_DEFAULT.exists():
        notes.append(f"{REF_SOCKET_DEFAULT} appeared during the run (not created by the bench)")
    data["meta"]["load"]["end"] = loadavg()
    data["meta"]["duration_s"] = round(time.time() - started)
    notes += [
        "Latencies are wall times of one exec as a runtime sees them; `nsenter --net` adds "
        "about the `nsenter true` row to every one of them, for both plugins.",
        "dnsmasq pool: the default .100-.199 plus .20-.99 in both LANs (180 addresses), "
        "because the reference leaves every lease held at the server after DEL.",
        "The 250-lease case runs on isc-dhcp-server started by the bench with a pool of the "
        "whole /24 (252 addresses): testbed/sandbox.py's start_dhcpd serves .100-.199 only.",
        "Other sessions' test runs may share the machine: see the load averages and the "
        "count of other cbd-* namespaces.",
    ]
    return data


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few iterations: a smoke run (~3 min)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "results")
    p.add_argument("--docs", type=Path, default=None, help="also write the markdown here")
    p.add_argument("--no-docs", action="store_true", help="do not refresh docs/BENCH.md")
    p.add_argument("--render", type=Path, help="re-render the markdown of a stored JSON")
    args = p.parse_args(args_list)
    if args.render:
        data = json.loads(args.render.read_text())
        sys.stdout.write(full_report(data, load_before()))
        return 0
    if os.geteuid() != 0:
        print("make bench needs root (it creates network namespaces).", file=sys.stderr)
        return 1
    docs = args.docs
    if docs is None and not args.quick and not args.no_docs:
        docs = ROOT / "docs" / "BENCH.md"
    signal.signal(signal.SIGTERM, _terminate)
    data = bench(QUICK if args.quick else FULL, args.quick, args_list)
    path = write_results(data, args.results_dir, docs)
    say(f"report: {path}" + (f" (and {docs})" if docs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
