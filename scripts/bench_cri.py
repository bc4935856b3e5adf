#!/usr/bin/env python3
"""`make bench`, CRI part: RunPodSandbox / StopPodSandbox latency through containerd.

Two identical sandboxes (LAN with dnsmasq --no-ping, node), one containerd in each node
namespace (tests/runtimes/cri.py: private root, state, socket, CNI dirs), one with our plugin
(the `make binary` zipapp + agent), one with the reference bridge + dhcp daemon on a
hand-bridged node. Pods are started and stopped alternately between the two, as kubelet would
(RunPodSandbox, StopPodSandbox, RemovePodSandbox); the wall time of each CRI call is what
kubelet waits. `make bench` runs measure() inside bench.py's run (one report); alone, this
writes results/bench-cri-<time>.json and replaces the "Through containerd's CRI" section of
docs/BENCH.md.

Usage: bench_cri.py [--pods N] [--results-dir DIR] [--docs PATH | --no-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fixture import REF_DIR, install_zipapp, start_ours, start_reference  # noqa: E402

from testbed.sandbox import Sandbox  # noqa: E402
from tests.runtimes.cri import Containerd  # noqa: E402
from tests.runtimes.images import build_images  # noqa: E402

SECTION = "## Through containerd's CRI (RunPodSandbox / StopPodSandbox)"
EXTRA_RANGE = "192.168.77.20,192.168.77.99,255.255.255.0,2m"


def link_plugins(bin_dir: Path, names: tuple[str, ...]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(REF_DIR / name)


def version(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0]
    return "?"


def measure(pods: int, work: Path) -> dict[str, Any]:
    pause, _busybox = build_images()
    zipapp = install_zipapp(sys.executable, ROOT, work / "zipapp")
    boxes = {"ours": Sandbox(work / "ours"), "reference": Sandbox(work / "reference")}
    runtimes: dict[str, Containerd] = {}
    times: dict[str, dict[str, list[float]]] = {name: {"run": [], "stop": []} for name in boxes}
    try:
        for sb in boxes.values():
            sb.setup()
            sb.start_dnsmasq(no_ping=True, extra=[f"--dhcp-range={EXTRA_RANGE}"])
        ours = start_ours(boxes["ours"], zipapp, log_level="info")
        link_plugins(ours.sb.cni_bin_dir, ("loopback",))
        ref = start_reference(boxes["reference"])
        ref_bin = ref.sb.tmp / "ref-bin"
        link_plugins(ref_bin, ("bridge", "dhcp", "loopback"))
        bin_dirs = {"ours": ours.sb.cni_bin_dir, "reference": ref_bin}
        for name, sb in boxes.items():
            ctrd = Containerd(sb, bin_dir=bin_dirs[name], conf_dir=sb.netconf_dir)
            runtimes[name] = ctrd
            ctrd.start()
            ctrd.import_image(pause)
        # one unmeasured pod each: the first ADD of ours takes the uplink over
        for i in range(pods + 1):
            for name, ctrd in runtimes.items():
                config = ctrd.sandbox_config(f"bench-{i}", namespace="bench")
                t0 = time.perf_counter()
                pod = ctrd.run_pod(config)
                t1 = time.perf_counter()
                ctrd.stop_pod(pod.id)
                t2 = time.perf_counter()
                ctrd.remove_pod(pod.id)
                if i > 0:
                    times[name]["run"].append((t1 - t0) * 1000)
                    times[name]["stop"].append((t2 - t1) * 1000)
    finally:
        for ctrd in runtimes.values():
            with contextlib.suppress(Exception):
                ctrd.stop()
                ctrd.remove_dir()
        for sb in boxes.values():
            sb.teardown()
    return {
        "meta": {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "pods": pods,
            "containerd": version(["containerd", "--version"]),
            "runc": version(["runc", "--version"]),
            "kernel": platform.release(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        },
        "ms": times,
    }


def render(data: dict[str, Any]) -> str:
    meta, ms = data["meta"], data["ms"]

    def row(op: str, label: str) -> str:
        cells = []
        for name in ("ours", "reference"):
            values = ms[name][op]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})")
        return f"| {label} | {cells[0]} | {cells[1]} |"

    return "\n".join(
        [
            SECTION,
            "",
            f"{meta['pods']} pods per plugin, alternating, one containerd per node namespace "
            f"({meta['containerd']}; {meta['runc']}), driven through the CRI v1 API as "
            "kubelet does; dnsmasq `--no-ping`. Median (min-max) wall time of each call in "
            "ms, after one unmeasured pod per side (ours: the uplink takeover). Both include "
            "containerd's own work (the pause container, the netns, loopback).",
            "",
            "| CRI call | cni-bridge-dhcp | reference bridge + dhcp |",
            "|---|---|---|",
            row("run", "RunPodSandbox"),
            row("stop", "StopPodSandbox"),
            "",
            f"Run {meta['time']}, kernel {meta['kernel']}, load averages "
            f"{' '.join(meta['loadavg'])} at the end. `make bench` runs this after bench.py "
            "(`scripts/bench_cri.py`).",
            "",
        ]
    )


def replace_section(doc: str, section: str) -> str:
    """``doc`` with its CRI section replaced by ``section`` (inserted before Notes if none)."""
    lines = doc.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    if start is not None:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        return "".join(lines[:start]) + section + "\n" + "".join(lines[end:])
    notes = next((i for i, ln in enumerate(lines) if ln.rstrip() == "## Notes"), len(lines))
    return "".join(lines[:notes]) + section + "\n" + "".join(lines[notes:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--pods", type=int, default=12, help="measured pods per plugin (>= 10)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCH.md")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cbd-bench-cri-") as work:
        data = measure(args.pods, Path(work))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"bench-cri-{stamp}.json"
    out.write_text(json.dumps(data, indent=2))
    section = render(data)
    print(section)
    if not args.no_docs:
        docs: Path = args.docs
        docs.write_text(replace_section(docs.read_text() if docs.exists() else "", section))
    print(f"bench_cri: results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
