#!/usr/bin/env python3
"""The zipapp's exec cost against the interpreter's own floor, in one run (issue 16).

Prints the median of N execs, interleaved so that load on the machine hits every case alike:
a bare `python3 -I -S -c pass` (the floor), a bare `python3 -c pass`, the zipapp's VERSION,
and two round trips to a live agent (STATUS, DEL of a container it never saw), each with
its ratio to the floor and whether it is within TARGET of it. Then the `-X importtime` top
entries of each zipapp path. The agent runs in a Sandbox's node namespace (created and
removed here); the plugin only connects to its socket file. Needs root.

Usage: exec-floor.py [--runs 20] [--zipapp FILE] [--top 12]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugin_inputs import SYSTEM_PATH, VERSION_IN  # noqa: E402

from testbed.sandbox import Sandbox  # noqa: E402

TARGET = 2.0
NETCONF = {
    "cniVersion": "1.1.0",
    "name": "lan",
    "type": "cni-bridge-dhcp",
    "bridge": "cni0",
    "uplink": "eth0",
    "ipam": {"type": "dhcp"},
}
Case = tuple[str, list[str], dict[str, str], bytes]


def python_argv(zipapp: Path, *options: str) -> list[str]:
    """How the file runs Python, with ``options`` added. Its #! line passes one argument
    after the interpreter's path: "-ISc<code>" (scripts/build-zipapp.py), or the flags of a
    plain --shebang zipapp."""
    first = zipapp.read_bytes()[:256].split(b"\n", 1)[0].decode()
    path, _, arg = first.removeprefix("#!").strip().partition(" ")
    flags, c, code = arg.partition("c")
    if arg.startswith("-") and c and (flags == "-" or flags[1:].isalpha()):
        return [path, *([flags] if flags != "-" else []), *options, "-c", code, str(zipapp)]
    return [path, *([arg] if arg else []), *options, str(zipapp)]


def cases(zipapp: Path, socket: Path, python: str) -> list[Case]:
    base = {"PATH": SYSTEM_PATH}
    conf = json.dumps({**NETCONF, "agentSocket": str(socket)}).encode()
    delete = {
        **base,
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "exec-floor-never-added",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "",
        "CNI_PATH": "/opt/cni/bin",
    }
    return [
        ("python3 -I -S -c pass", [python, "-I", "-S", "-c", "pass"], base, b""),
        ("python3 -c pass", [python, "-c", "pass"], base, b""),
        ("zipapp VERSION", [str(zipapp)], {**base, "CNI_COMMAND": "VERSION"}, VERSION_IN),
        ("zipapp STATUS (agent)", [str(zipapp)], {**base, "CNI_COMMAND": "STATUS"}, conf),
        ("zipapp DEL unknown (agent)", [str(zipapp)], delete, conf),
    ]


def run_once(cmd: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=30, check=False)
    return (time.perf_counter() - start) * 1000, proc.returncode, proc.stdout


def importtime(zipapp: Path, env: dict[str, str], stdin: bytes, top: int) -> list[str]:
    cmd = python_argv(zipapp, "-X", "importtime")
    err = subprocess.run(
        cmd, input=stdin, env=env, capture_output=True, timeout=30, check=False
    ).stderr.decode()
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        rows.append((int(self_us), int(cumulative), name.rstrip()))
    lines = [f"    {len(rows)} modules imported, self total {sum(r[0] for r in rows)} us"]
    for self_us, cumulative, name in sorted(rows, reverse=True)[:top]:
        lines.append(f"    self {self_us:6d} us  cumulative {cumulative:6d} us  {name.strip()}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--zipapp", type=Path, help="default: build one from this checkout")
    p.add_argument("--python", default="/usr/bin/python3", help="the floor's interpreter")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="exec-floor-") as tmp:
        zipapp = args.zipapp
        if zipapp is None:
            zipapp = Path(tmp) / "cni-bridge-dhcp"
            build = [sys.executable, str(ROOT / "scripts/build-zipapp.py"), str(zipapp)]
            subprocess.run(build, check=True, capture_output=True, timeout=60)
        print(f"zipapp {zipapp}: {shlex.join(python_argv(zipapp))[:120]}")
        with Sandbox(Path(tmp) / "sb") as sb:
            sb.start_agent()
            todo = cases(zipapp, sb.agent_socket, args.python)
            for name, cmd, env, stdin in todo:  # once untimed: warm caches, show the answers
                _, code, out = run_once(cmd, env, stdin)
                print(f"  {name}: exit {code} {out.decode().strip()[:100]}")
            times: dict[str, list[float]] = {name: [] for name, *_ in todo}
            for _ in range(args.runs):
                for name, cmd, env, stdin in todo:
                    times[name].append(run_once(cmd, env, stdin)[0])
            floor = statistics.median(times[todo[0][0]])
            print(f"\nmedian of {args.runs} execs each, interleaved (ms):")
            for name, values in times.items():
                median = statistics.median(values)
                ratio = median / floor
                verdict = (
                    ""
                    if name.startswith("python3")
                    else (f"  <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'}")
                )
                print(
                    f"  {name:28s} {median:6.1f} (min {min(values):5.1f})  {ratio:4.2f}x{verdict}"
                )
            print("\n-X importtime, top entries by self time:")
            for name, _, env, stdin in todo[2:]:
                print(f"  {name}:")
                print("\n".join(importtime(zipapp, env, stdin, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
