#!/usr/bin/env python3
"""The agent's cost per operation: CPU (from /proc, robust to a loaded machine), wall time,
and, with --ref, the reference bridge + dhcp and a bare `ip link del` DEL floor interleaved
in the same sandbox shape as scripts/bench.py.

Usage (root): .venv/bin/python scripts/perf-agent.py [--seq N] [--conc N] [--ref]
    [--arp-probe-wait S] [--hold]  (--hold: print the agent pid and wait for Enter before
    the measured part, to attach py-spy or strace)

Everything runs in namespaces it creates (testbed.sandbox.Sandbox) and removes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_fixture import (
    NODE_PATH,
    BenchPod,
    Op,
    Side,
    cpu_ms,
    install_zipapp,
    machine_busy_ms,
    reaped_cpu_ms,
    sample_proc,
    start_ours,
    start_reference,
    ticks_ms,
    timed,
    together,
)

from testbed.sandbox import REPO_ROOT, Sandbox, parse_dnsmasq_leases, run


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, ops: list[Op]) -> str:
    ms = [o.ms for o in ops]
    bad = sum(not o.ok for o in ops)
    errs = "; ".join({o.error() for o in ops if not o.ok})[:300]
    return (
        f"{name:<28} n={len(ms):<3} median {statistics.median(ms):7.1f} ms  "
        f"p99 {pct(ms, 0.99):7.1f} ms  max {max(ms):7.1f} ms  failures {bad} {errs}"
    )


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (field 3 on)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def reaped_ticks(pid: int) -> int:
    """cutime + cstime: the CPU of the process's children it waited for (iptables-*, ...)."""
    fields = _stat(pid)
    return int(fields[13]) + int(fields[14])


def user_sys(pid: int) -> tuple[int, int]:
    """(utime, stime) of the whole process in clock ticks."""
    fields = _stat(pid)
    return int(fields[11]), int(fields[12])


def floor_del(sb: Sandbox, tag: str) -> Op:
    """A bare `ip link del` of a pod's veth whose host end is on the node's bridge."""
    pod = sb.add_pod(f"floor-{tag}")
    host = f"fl{tag}"[:15]
    run(["ip", "-n", sb.node, "link", "add", host, "type", "veth", "peer", "eth0",
         "netns", pod.name])  # fmt: skip
    run(["ip", "-n", sb.node, "link", "set", host, "master", "cni0", "up"])
    op = timed(["ip", "link", "del", "eth0"], netns_path=pod.path, env={"PATH": NODE_PATH})
    run(["ip", "netns", "delete", pod.name], check=False)
    return op


def host_table(rules: int) -> str:
    """A host table of ``rules`` rules, ten per chain, and a forward chain that accepts."""
    lines = ["table inet hostfw {"]
    for chain in range((rules + 9) // 10):
        lines.append(f"  chain svc{chain} {{")
        for r in range(min(10, rules - chain * 10)):
            lines.append(
                f"    ip daddr 10.96.{chain // 250}.{chain % 250} tcp dport {8000 + r} accept"
            )
        lines.append("  }")
    lines.append("  chain forward { type filter hook forward priority 0; policy accept; }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def iptables_host_table(rules: int) -> str:
    """An iptables-nft filter table of ``rules`` REJECTs in one chain (a fail2ban ban list)."""
    lines = ["*filter", ":f2b-sshd - [0:0]"]
    for i in range(rules):
        lines.append(f"-A f2b-sshd -s 203.0.{i // 250}.{i % 250 + 1}/32 -j REJECT")
    return "\n".join([*lines, "-A FORWARD -j f2b-sshd", "COMMIT"]) + "\n"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--conc", type=int, default=0)
    p.add_argument("--ref", action="store_true")
    p.add_argument("--arp-probe-wait", type=float, default=None)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--ipv6-off", action="store_true", help='ipam.ipv6 "off" (no SLAAC wait)')
    p.add_argument(
        "--host-rules",
        type=int,
        default=0,
        help="a host nftables table of N rules (and a forward chain) in the node, as "
        "kube-proxy's nftables mode or firewalld would have",
    )
    p.add_argument(
        "--host-iptables-rules",
        type=int,
        default=0,
        help="an iptables-nft filter table of N rules in the node (fail2ban, ufw, Docker)",
    )
    p.add_argument(
        "--hold-dels",
        action="store_true",
        help="wait for Enter before the concurrent DELs (to attach strace or perf to them)",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--keep-log", help="copy the agent's log here at the end")
    p.add_argument(
        "--yappi", help="profile the measured part with yappi (CPU clock) into this file"
    )
    args = p.parse_args()
    if args.yappi:
        # build/perf/yappi/sitecustomize.py toggles yappi on SIGUSR2 when CBD_YAPPI_OUT is set
        os.environ["PYTHONPATH"] = f"{REPO_ROOT / 'build/perf/yappi'}:{REPO_ROOT}"
        os.environ["CBD_YAPPI_OUT"] = str(Path(args.yappi).resolve())
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        ours_sb = Sandbox(Path(tmp) / "ours")
        ref_sb = Sandbox(Path(tmp) / "ref")
        with ours_sb:
            extra = ["--dhcp-range=192.168.77.20,192.168.77.99,255.255.255.0,2m"]
            ours_sb.start_dnsmasq(extra=extra)
            zipapp = install_zipapp(sys.executable, REPO_ROOT, Path(tmp) / "zipapp")
            if args.host_rules:
                run(["nft", "-f", "-"], netns=ours_sb.node, input=host_table(args.host_rules))
            if args.host_iptables_rules:
                run(
                    ["iptables-nft-restore"],
                    netns=ours_sb.node,
                    input=iptables_host_table(args.host_iptables_rules),
                )
            ours = start_ours(ours_sb, zipapp, log_level=args.log_level)
            ipam: dict[str, object] = {"type": "dhcp"}
            if args.arp_probe_wait is not None:
                ipam["arpProbeWait"] = args.arp_probe_wait
            if args.ipv6_off:
                ipam["ipv6"] = "off"
            ours.plugin["ipam"] = ipam
            ours.write_conflist()
            ref: Side | None = None
            if args.ref:
                ref_sb.setup()
                ref_sb.start_dnsmasq(extra=extra)
                ref = start_reference(ref_sb)
            try:
                return run_all(ours, ref, args)
            finally:
                if args.keep_log:
                    shutil.copy(ours_sb.agent_log, args.keep_log)
                if args.ref:
                    ref_sb.teardown()


def run_all(ours: Side, ref: Side | None, args: argparse.Namespace) -> int:
    assert ours.daemon_pid is not None
    pid = ours.daemon_pid
    # warm-up: uplink takeover, firewall setup, imports
    for i in range(3):
        bp = ours.new_pod(f"w{i}")
        ok = ours.cni("add", bp)
        if not ok.ok:
            print("warm-up ADD failed:", ok.error(), file=sys.stderr)
            return 1
        ours.cni("del", bp)
        ours.drop_pod(bp)
    if ref is not None:
        bp = ref.new_pod("w")
        ref.cni("add", bp)
        ref.cni("del", bp)
        ref.drop_pod(bp)
    if args.hold:
        print(f"agent pid {pid}; press Enter to go on", flush=True)
        sys.stdin.readline()
    if args.yappi:
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)
    if args.seq:
        seq(ours, ref, pid, args.seq)
    if args.conc:
        conc(ours, ref, pid, args.conc, args.hold_dels)
    if args.yappi:
        os.kill(pid, signal.SIGUSR2)
        time.sleep(3)
    return 0


def seq(ours: Side, ref: Side | None, pid: int, n: int) -> None:
    tree: dict[str, list[float]] = {"ours ADD": [], "ours DEL": [], "ref ADD": [], "ref DEL": []}
    add_ops: list[Op] = []
    del_ops: list[Op] = []
    ref_del: list[Op] = []
    floor: list[Op] = []
    add_cpu: list[float] = []
    del_cpu: list[float] = []
    split = {"add": [0, 0], "del": [0, 0]}
    reaped = {"add": 0, "del": 0}
    for i in range(n):
        bp = ours.new_pod(f"s{i}")
        before = sample_proc(pid)
        u0, s0 = user_sys(pid)
        c0 = reaped_cpu_ms()
        r0 = reaped_ticks(pid)
        add_ops.append(ours.cni("add", bp))
        reaped["add"] += reaped_ticks(pid) - r0
        tree["ours ADD"].append(reaped_cpu_ms() - c0)
        add_cpu.append(cpu_ms(before, sample_proc(pid)))
        u1, s1 = user_sys(pid)
        split["add"][0] += u1 - u0
        split["add"][1] += s1 - s0
        rbp: BenchPod | None = None
        if ref is not None:
            rbp = ref.new_pod(f"s{i}")
            c0 = reaped_cpu_ms()
            ref.cni("add", rbp)
            tree["ref ADD"].append(reaped_cpu_ms() - c0)
        # interleave the DELs (order flipped every pair) so load drifts hit all alike
        steps = ["ours", "ref", "floor"] if i % 2 == 0 else ["floor", "ref", "ours"]
        for step in steps:
            if step == "ours":
                mid = sample_proc(pid)
                u0, s0 = user_sys(pid)
                c0 = reaped_cpu_ms()
                r0 = reaped_ticks(pid)
                del_ops.append(ours.cni("del", bp))
                reaped["del"] += reaped_ticks(pid) - r0
                tree["ours DEL"].append(reaped_cpu_ms() - c0)
                after = sample_proc(pid)
                u1, s1 = user_sys(pid)
                split["del"][0] += u1 - u0
                split["del"][1] += s1 - s0
                del_cpu.append(cpu_ms(mid, after))
            elif step == "ref" and ref is not None and rbp is not None:
                c0 = reaped_cpu_ms()
                ref_del.append(ref.cni("del", rbp))
                tree["ref DEL"].append(reaped_cpu_ms() - c0)
            elif step == "floor" and ref is not None:
                floor.append(floor_del(ours.sb, str(i)))
        ours.drop_pod(bp)
        if rbp is not None and ref is not None:
            ref.drop_pod(rbp)
    print(summary("ours ADD", add_ops))
    print(summary("ours DEL", del_ops))
    if ref_del:
        print(summary("reference DEL", ref_del))
        print(summary("bare ip link del (floor)", floor))
        ratios = [o.ms / r.ms for o, r in zip(del_ops, ref_del, strict=True)]
        print(f"DEL ours/reference per pair: median {statistics.median(ratios):.3f}x")
    # CPU: /proc ticks are 10 ms, so the per-op figure is the mean over n ops
    print(f"agent CPU per ADD {sum(add_cpu) / n:.1f} ms, per DEL {sum(del_cpu) / n:.1f} ms")
    for op, (user, system) in split.items():
        print(f"  {op}: user {ticks_ms(user) / n:.1f} ms, system {ticks_ms(system) / n:.1f} ms")
    print(
        f"agent's children (tools it runs) CPU per ADD {ticks_ms(reaped['add']) / n:.1f} ms, "
        f"per DEL {ticks_ms(reaped['del']) / n:.1f} ms"
    )
    # the exec chain (nsenter, cnitool, plugin, and the reference's dhcp plugin exec); the
    # daemons are not children, so their CPU is not in here
    for name, values in tree.items():
        if values:
            print(f"exec tree CPU per {name}: median {statistics.median(values):.1f} ms")
    left = parse_dnsmasq_leases(ours.sb.dnsmasq_leases_path)
    print(f"leases left at the server after DEL: {len(left)}")


def conc(ours: Side, ref: Side | None, pid: int, n: int, hold_dels: bool = False) -> None:
    sides = [ours] if ref is None else [ours, ref]
    for side in sides:
        pods = [side.new_pod(f"c{i}") for i in range(n)]
        before = sample_proc(pid)
        adds = together([lambda bp=bp, side=side: side.cni("add", bp) for bp in pods])
        mid = sample_proc(pid)
        time.sleep(0.5)
        if hold_dels and side is ours:
            print(f"agent pid {pid}: {n} pods added; press Enter for their DELs", flush=True)
            sys.stdin.readline()
        mid2 = sample_proc(pid)
        busy_before, started = machine_busy_ms(), time.monotonic()
        dels = together([lambda bp=bp, side=side: side.cni("del", bp) for bp in pods])
        busy, ended = machine_busy_ms() - busy_before, time.monotonic()
        after = sample_proc(pid)
        print(summary(f"{side.name} {n} concurrent ADD", adds))
        print(summary(f"{side.name} {n} concurrent DEL", dels))
        print(
            f"  machine CPU during the DELs: {busy:.0f} ms ({busy / n:.1f} ms per DEL), "
            f"monotonic {started:.3f}-{ended:.3f}"
        )
        if side is ours:
            print(
                f"agent CPU per concurrent ADD {cpu_ms(before, mid) / n:.1f} ms, "
                f"per DEL {cpu_ms(mid2, after) / n:.1f} ms"
            )
        for bp in pods:
            side.drop_pod(bp)


if __name__ == "__main__":
    raise SystemExit(main())
