#!/usr/bin/env python3
"""Median wall time of the plugin's own work: VERSION, and ADD with the agent down.

Usage: plugin-timing.py [--runs N] [--cmd "python3 -m cni_bridge_dhcp"]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from plugin_inputs import SYSTEM_PATH, VERSION_IN, agent_down_add, version_env


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
    p.add_argument("--path", default=SYSTEM_PATH)
    args = p.parse_args()
    cmd = shlex.split(args.cmd)
    with tempfile.TemporaryDirectory() as tmp:
        version = measure(cmd, version_env(args.path), VERSION_IN, args.runs)
        add_env, add_in = agent_down_add(tmp, args.path)
        down = measure(cmd, add_env, add_in, args.runs)
    for name, values in (("VERSION", version), ("ADD, agent down", down)):
        print(
            f"{name}: median {statistics.median(values):.1f} ms "
            f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
