#!/usr/bin/env python3
"""Median wall time of the plugin's own work: VERSION, and ADD with the agent down.

Usage: plugin-timing.py [--runs N] [--cmd "python3 -m cni_bridge_dhcp"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def measure(cmd: list[str], env: dict[str, str], stdin: bytes, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=30, check=False)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--cmd", default=f"{sys.executable} -m cni_bridge_dhcp")
    # A node's runtime (kubelet/containerd) execs plugins with a system PATH.
    p.add_argument("--path", default="/usr/sbin:/usr/bin:/sbin:/bin")
    args = p.parse_args()
    cmd = shlex.split(args.cmd)
    base = {"PATH": args.path}
    with tempfile.TemporaryDirectory() as tmp:
        conf = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "lan",
                "type": "cni-bridge-dhcp",
                "agentSocket": f"{tmp}/none.sock",
            }
        ).encode()
        version = measure(
            cmd, {**base, "CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}', args.runs
        )
        add_env = {
            **base,
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "timing",
            "CNI_NETNS": f"{tmp}/nonexistent",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
        }
        down = measure(cmd, add_env, conf, args.runs)
    for name, values in (("VERSION", version), ("ADD, agent down", down)):
        print(
            f"{name}: median {statistics.median(values):.1f} ms (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
