#!/usr/bin/env python3
"""`make soak`: the agent's RSS over many ADD/DEL cycles (issue 16, target 7).

One sandbox (a LAN namespace with dnsmasq, a node namespace with our agent, the `make binary`
zipapp driven by cnitool, exactly as `make bench` does), then CYCLES ADD+DEL cycles of fresh
pods, PARALLEL at a time. Every SAMPLE cycles: the agent's RSS, its private dirty/anonymous
memory (/proc/<pid>/smaps_rollup), open fds and threads; with --probe also the agent's
gc and tracemalloc state (scripts/agent_probe/sitecustomize.py, loaded through PYTHONPATH, so
the agent's code is not changed). The verdict: RSS growth from the end of the warm-up to the
last sample, against the target (< 5 MiB over 20,000 cycles). Writes results/soak-<time>.json
and prints a summary. Needs root; touches nothing outside the namespaces it creates.

Usage: soak.py [--cycles 20000] [--warmup 500] [--sample 250] [--parallel 4]
               [--agent-env KEY=VALUE ...] [--probe] [--tracemalloc] [--fast]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fixture import Side, install_zipapp, start_ours  # noqa: E402

from testbed.sandbox import Sandbox, ensure_cnitool  # noqa: E402

EXTRA_RANGE = "--dhcp-range=192.168.77.20,192.168.77.99,255.255.255.0,2m"
TARGET_KIB = 5 * 1024
PROBE_DIR = ROOT / "scripts" / "agent_probe"


def say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


def memory(pid: int) -> dict[str, int]:
    """RSS, the anonymous part of it (the heap: what a leak grows) and fds/threads."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def cycle(side: Side, tag: str) -> tuple[bool, float]:
    bp = side.new_pod(tag)
    start = time.perf_counter()
    try:
        add = side.cni("add", bp)
        ok = add.ok and side.cni("del", bp).ok
    finally:
        side.drop_pod(bp)
    return ok, (time.perf_counter() - start) * 1000


def probe(pid: int, path: Path) -> dict[str, Any] | None:
    """Ask the probe in the agent for one line and return it (None if none came)."""
    lines = path.read_text().count("\n") if path.exists() else 0
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") > lines:
            row: dict[str, Any] = json.loads(text.splitlines()[-1])
            return row
        time.sleep(0.05)
    return None


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ensure_cnitool()
    zipapp = install_zipapp(sys.executable, ROOT, work / "zipapp")
    env = dict(kv.split("=", 1) for kv in args.agent_env)
    probe_out = work / "probe.jsonl"
    if args.probe or args.tracemalloc:
        env |= {"PYTHONPATH": str(PROBE_DIR), "CBD_SOAK_PROBE": str(probe_out)}
    if args.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "1"
    samples: list[dict[str, Any]] = []
    failures = 0
    times: list[float] = []
    with Sandbox(work / "sb") as sb:
        sb.start_dnsmasq(no_ping=True, extra=[EXTRA_RANGE])
        # the agent as an operator runs it (info)
        side = start_ours(sb, zipapp, log_level="info", env=env)
        if args.fast:
            side.plugin["ipam"] = {**side.plugin["ipam"], "arpProbeWait": 0, "ipv6": "off"}
            side.write_conflist()
        assert side.daemon_pid is not None
        pid = side.daemon_pid
        total = args.warmup + args.cycles
        done = 0
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            while done < total:
                step = min(args.sample, total - done)
                for ok, ms in pool.map(lambda i: cycle(side, f"k{i}"), range(done, done + step)):
                    failures += not ok
                    times.append(ms)
                done += step
                row: dict[str, Any] = {
                    "cycles": done,
                    "s": round(time.monotonic() - started, 1),
                    **memory(pid),
                }
                if args.probe or args.tracemalloc:
                    row["probe"] = probe(pid, probe_out)
                samples.append(row)
                say(
                    f"{done}/{total} cycles, RSS {row['VmRSS']} KiB, anon {row['RssAnon']} KiB, "
                    f"fds {row['fds']}, {failures} failures"
                )
        duration = time.monotonic() - started
    base = next((s for s in samples if s["cycles"] >= args.warmup), samples[0])
    last = samples[-1]
    growth = last["VmRSS"] - base["VmRSS"]
    measured = last["cycles"] - base["cycles"]
    per_cycle = growth * 1024 / measured if measured else 0.0
    return {
        "meta": {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": {k: v for k, v in vars(args).items() if k != "results_dir"},
            "agent_env": env,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        },
        "duration_s": round(duration, 1),
        "cycle_ms_median": round(statistics.median(times), 1) if times else None,
        "cycles_per_s": round(len(times) / duration, 2) if duration else None,
        "failures": failures,
        "rss_growth_kib": growth,
        "anon_growth_kib": last["RssAnon"] - base["RssAnon"],
        "growth_bytes_per_cycle": round(per_cycle, 1),
        "measured_cycles": measured,
        "projected_20000_kib": round(per_cycle * 20000 / 1024),
        "target": "< 5 MiB RSS growth after warm-up over 20,000 cycles",
        "met": growth < TARGET_KIB and measured >= 20000,
        "samples": samples,
    }


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the sandbox's teardown still runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=20000, help="measured ADD/DEL cycles")
    p.add_argument("--warmup", type=int, default=500, help="cycles before the baseline")
    p.add_argument("--sample", type=int, default=250, help="cycles between samples")
    p.add_argument("--parallel", type=int, default=4, help="cycles in flight at once")
    p.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--probe", action="store_true", help="gc/object counts from the agent")
    p.add_argument("--tracemalloc", action="store_true", help="--probe plus tracemalloc")
    p.add_argument("--fast", action="store_true", help="arpProbeWait 0, ipv6 off")
    p.add_argument("--results-dir", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("make soak needs root (it creates network namespaces).", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="cbd-soak-") as work:
        data = soak(args, Path(work))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"soak-{stamp}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    verdict = "met" if data["met"] else "not met"
    say(
        f"{data['measured_cycles']} cycles after {args.warmup} warm-up in {data['duration_s']} s "
        f"({data['cycles_per_s']}/s, cycle median {data['cycle_ms_median']} ms), "
        f"{data['failures']} failures: RSS +{data['rss_growth_kib']} KiB "
        f"(anon +{data['anon_growth_kib']} KiB), {data['growth_bytes_per_cycle']} B/cycle, "
        f"projected over 20,000: {data['projected_20000_kib']} KiB: {verdict}. {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
