#!/usr/bin/env python3
"""Measure the self-contained plugin builds against the zipapp (numbers in docs/NATIVE_BUILDS.md).

Run as root from the repository root with the project venv (the round trip needs a real agent
in a sandbox of namespaces; nothing touches the root network namespace):

    .venv/bin/python scripts/measure-native.py [--runs 20] [--skip-build] [--json PATH]

For each build (zipapp, PyInstaller onedir/onefile, Nuitka standalone/onefile) it records:
  * build time (clean: PyInstaller --clean, Nuitka with an empty cache dir) and size;
  * VERSION and ADD-with-the-agent-down (the exact env and stdin of scripts/plugin-timing.py),
    and an ADD then DEL round trip to a real agent with dnsmasq on the sandbox LAN, each exec
    timed from fork to exit; the builds take turns within every round so machine load hits
    them alike; wall-clock and CPU (user+sys of the plugin's whole process tree) medians;
  * scripts/plugin-timing.py per build, as a sequential cross-check;
  * portability: VERSION with a scrubbed env (env -i PATH=/usr/bin:/bin), with PYTHONHOME,
    PYTHONPATH and cwd pointing at a decoy stdlib module, and in a private mount namespace in
    which every Python install and both venvs are hidden; ldd of every ELF file; the newest
    glibc symbol version required;
  * leftovers after a SIGKILL mid-ADD (private TMPDIR), behaviour with a noexec /tmp (tmpfs
    mounted in a private mount namespace), and 20 concurrent first execs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugin_inputs import SYSTEM_PATH, VERSION_IN, agent_down_add  # noqa: E402
from plugin_inputs import version_env as plugin_version_env  # noqa: E402

from cni_bridge_dhcp.agent.datapath.netns import open_netns, run_in_netns  # noqa: E402
from testbed.sandbox import Sandbox  # noqa: E402
from tests.e2e.helpers import conflist  # noqa: E402

OUT = ROOT / "build" / "native-variants"
NATIVE = ("pyinstaller-onedir", "pyinstaller-onefile", "nuitka-standalone", "nuitka-onefile")
ALL = ("zipapp", *NATIVE)
ONEFILE = ("pyinstaller-onefile", "nuitka-onefile")
SCRUBBED_PATH = "/usr/bin:/bin"
ONEFILE_CACHE = Path("/var/cache/cni-bridge-dhcp")  # build-native.py's default
# Python installs hidden for the "no Python on this node" check.
HIDE_DIRS = (
    "/usr/lib/python3",
    "/usr/lib/python3.11",
    "/usr/local/lib/python3.11",
    "/root/.pyenv",
    str(ROOT / ".venv"),
    str(ROOT / "build" / "venv-native"),
)
HIDE_FILE_GLOBS = ("/usr/bin/python3*", "/usr/lib/x86_64-linux-gnu/libpython3*")


def log(msg: str) -> None:
    print(f"[measure-native] {msg}", file=sys.stderr, flush=True)


# -- builds ------------------------------------------------------------------------------------


def exe_of(name: str) -> Path:
    return OUT / name / "cni-bridge-dhcp"


def build_all(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        out = OUT / name
        log(f"building {name}")
        if name == "zipapp":
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "scripts/build-zipapp.py", str(exe_of(name))],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            results[name] = {
                "build_seconds": round(time.monotonic() - started, 1),
                "size_bytes": exe_of(name).stat().st_size,
            }
            continue
        with tempfile.TemporaryDirectory(prefix="nuitka-cache-") as cache:
            # an empty Nuitka cache: build times are for a clean build
            env = {**os.environ, "NUITKA_CACHE_DIR": cache}
            cmd = [sys.executable, "scripts/build-native.py", "--variant", name]
            subprocess.run([*cmd, "--out", str(out), "--force"], cwd=ROOT, env=env, check=True)
        info = json.loads((out / "BUILD-INFO.json").read_text())
        results[name] = {k: info[k] for k in ("build_seconds", "size_bytes", "build_id", "tools")}
    return results


def build_info(name: str) -> dict[str, Any]:
    if name == "zipapp":
        return {"size_bytes": exe_of(name).stat().st_size}
    info: dict[str, Any] = json.loads((OUT / name / "BUILD-INFO.json").read_text())
    return info


def unpack_dir(name: str) -> Path | None:
    """Where a onefile build unpacks between execs (nuitka-onefile only; PyInstaller: $TMPDIR)."""
    if name == "nuitka-onefile":
        return ONEFILE_CACHE / str(build_info(name)["build_id"])
    return None


# -- timing ------------------------------------------------------------------------------------


def timed(
    cmd: list[str], env: dict[str, str], stdin: bytes, cwd: str | None = None
) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Wall ms from fork to exit, and CPU ms of the whole process tree (it is reaped in full)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=60, cwd=cwd)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu, proc


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def rotate(names: tuple[str, ...], k: int) -> list[str]:
    k %= len(names)
    return [*names[k:], *names[:k]]


def local_timings(names: tuple[str, ...], runs: int) -> dict[str, dict[str, Any]]:
    """VERSION and ADD-agent-down, the env and stdin of scripts/plugin-timing.py, interleaved."""
    samples: dict[str, dict[str, list[float]]] = {
        n: {"version_wall": [], "version_cpu": [], "down_wall": [], "down_cpu": []} for n in names
    }
    with tempfile.TemporaryDirectory() as tmp:
        add_env, conf = agent_down_add(tmp)
        version_env = plugin_version_env()
        for name in names:  # one untimed exec each: page cache and onefile unpack caches
            timed([str(exe_of(name))], version_env, VERSION_IN)
        for i in range(runs):
            for name in rotate(names, i):
                exe = [str(exe_of(name))]
                wall, cpu, proc = timed(exe, version_env, VERSION_IN)
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} VERSION failed: {proc.stderr.decode()}")
                samples[name]["version_wall"].append(wall)
                samples[name]["version_cpu"].append(cpu)
                wall, cpu, proc = timed(exe, add_env, conf)
                if b'"code"' not in proc.stdout:
                    raise RuntimeError(f"{name} ADD (agent down) gave no CNI error: {proc!r}")
                samples[name]["down_wall"].append(wall)
                samples[name]["down_cpu"].append(cpu)
    return {n: {k: summary(v) for k, v in s.items()} for n, s in samples.items()}


def plugin_timing(names: tuple[str, ...], runs: int) -> dict[str, str]:
    out = {}
    for name in names:
        proc = subprocess.run(
            [
                "/usr/bin/python3",
                "scripts/plugin-timing.py",
                "--cmd",
                str(exe_of(name)),
                "--runs",
                str(runs),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = proc.stdout.strip()
    return out


def round_trips(names: tuple[str, ...], runs: int, tmp: Path) -> dict[str, dict[str, Any]]:
    """ADD then DEL of a fresh pod namespace through a real agent, the plugin run in the node."""
    samples: dict[str, dict[str, list[float]]] = {
        n: {"add_wall": [], "add_cpu": [], "del_wall": [], "del_cpu": []} for n in names
    }
    sb = Sandbox(tmp)
    try:
        sb.setup()
        sb.start_dnsmasq()
        sb.start_agent()
        plugin = conflist(sb)["plugins"][0]
        conf = json.dumps({"cniVersion": "1.0.0", "name": "lan", **plugin}).encode()
        node_fd = open_netns(f"/run/netns/{sb.node}")
        try:
            _check_child_netns(node_fd, sb.node)
            seq = 0

            def one(name: str, record: bool) -> None:
                nonlocal seq
                seq += 1
                pod = sb.add_pod(f"t{seq}")
                env = {
                    "PATH": SYSTEM_PATH,
                    "CNI_CONTAINERID": f"native-{seq:04d}",
                    "CNI_NETNS": pod.path,
                    "CNI_IFNAME": "eth0",
                    "CNI_PATH": "/opt/cni/bin",
                    "CNI_ARGS": f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{seq}",
                }
                exe = [str(exe_of(name))]
                add = run_in_netns(node_fd, lambda: timed(exe, {**env, "CNI_COMMAND": "ADD"}, conf))
                if add[2].returncode != 0:
                    raise RuntimeError(f"{name} ADD failed: {add[2].stdout!r} {add[2].stderr!r}")
                result = json.loads(add[2].stdout)
                del_conf = json.dumps({**json.loads(conf), "prevResult": result}).encode()
                dele = run_in_netns(
                    node_fd, lambda: timed(exe, {**env, "CNI_COMMAND": "DEL"}, del_conf)
                )
                if dele[2].returncode != 0:
                    raise RuntimeError(f"{name} DEL failed: {dele[2].stdout!r} {dele[2].stderr!r}")
                subprocess.run(["ip", "netns", "delete", pod.name], check=True, timeout=10)
                if record:
                    samples[name]["add_wall"].append(add[0])
                    samples[name]["add_cpu"].append(add[1])
                    samples[name]["del_wall"].append(dele[0])
                    samples[name]["del_cpu"].append(dele[1])

            for name in names:  # warm-up: the first ADD sets up the node's bridge and uplink
                one(name, record=False)
            for i in range(runs):
                for name in rotate(names, i):
                    one(name, record=True)
        finally:
            os.close(node_fd)
    finally:
        sb.teardown()
    return {n: {k: summary(v) for k, v in s.items()} for n, s in samples.items()}


def _check_child_netns(node_fd: int, node: str) -> None:
    """A child forked by a thread that setns()'d lives in that namespace: prove it once."""
    proc = run_in_netns(
        node_fd,
        lambda: subprocess.run(
            ["readlink", "/proc/self/ns/net"], capture_output=True, text=True, check=True
        ),
    )
    want = f"net:[{os.stat(f'/run/netns/{node}').st_ino}]"
    if proc.stdout.strip() != want:
        raise RuntimeError(f"plugin child not in {node}: {proc.stdout.strip()} != {want}")


# -- portability and onefile behaviour -----------------------------------------------------------


def version_ok(proc: subprocess.CompletedProcess[bytes]) -> bool:
    try:
        return proc.returncode == 0 and "supportedVersions" in json.loads(proc.stdout)
    except ValueError:
        return False


def brief(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
    return f"exit {proc.returncode}: {text[-1][:160] if text else ''}"


def run_version(
    cmd: list[str], env: dict[str, str], cwd: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, input=VERSION_IN, env=env, capture_output=True, timeout=60, cwd=cwd)


def check_scrubbed(name: str) -> str:
    proc = run_version([str(exe_of(name))], {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION"})
    return "ok" if version_ok(proc) else f"FAIL ({brief(proc)})"


def check_pythonhome(name: str) -> str:
    """PYTHONHOME pointing nowhere: a frozen runtime must not look for a stdlib there."""
    env = {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION", "PYTHONHOME": "/nonexistent"}
    proc = run_version([str(exe_of(name))], env)
    return "ok" if version_ok(proc) else f"fails ({brief(proc)})"


def check_pythonpath_decoy(name: str) -> str:
    """PYTHONPATH and cwd hold a json.py that announces itself: it must not be imported."""
    with tempfile.TemporaryDirectory() as decoy:
        Path(decoy, "json.py").write_text("import sys\nsys.stderr.write('DECOY')\nsys.exit(97)\n")
        env = {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION", "PYTHONPATH": decoy}
        proc = run_version([str(exe_of(name))], env, cwd=decoy)
        if b"DECOY" in proc.stderr:
            return "FAILS (imported json.py from PYTHONPATH)"
        return "ok" if version_ok(proc) else f"fails ({brief(proc)})"


def in_private_mounts(setup: list[str], exe: Path, env: dict[str, str]) -> str:
    """A shell script for `unshare -m`: mounts made there are invisible to the host."""
    lines = ["set -e", *setup]
    assigns = " ".join(f"{k}={v}" for k, v in env.items())
    lines.append(f"exec env -i {assigns} {exe}")
    return "\n".join(lines)


def unshare_run(script: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        input=VERSION_IN,
        capture_output=True,
        timeout=60,
    )


def hide_python_mounts() -> list[str]:
    cmds = []
    for d in HIDE_DIRS:
        if Path(d).is_dir():
            cmds.append(f"mount -t tmpfs -o ro,size=4k tmpfs {d}")
    for pattern in HIDE_FILE_GLOBS:
        base, glob = pattern.rsplit("/", 1)
        for f in sorted(Path(base).glob(glob)):
            if f.is_file() and not f.is_symlink():
                cmds.append(f"mount --bind /dev/null {f}")
    # the hiding itself must work, or the check proves nothing
    cmds.append(
        "if /usr/bin/python3 -c pass 2>/dev/null; then echo python-visible >&2; exit 96; fi"
    )
    return cmds


def check_no_python(name: str) -> str:
    env = {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION"}
    proc = unshare_run(in_private_mounts(hide_python_mounts(), exe_of(name), env))
    if proc.returncode == 96:
        return "CHECK BROKEN (python still visible)"
    return "ok" if version_ok(proc) else f"fails ({brief(proc)})"


def check_noexec_tmp(name: str) -> str:
    setup = ["mount -t tmpfs -o noexec,nosuid,nodev,size=256m tmpfs /tmp"]
    env = {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION"}
    proc = unshare_run(in_private_mounts(setup, exe_of(name), env))
    return "ok" if version_ok(proc) else f"FAILS ({brief(proc)})"


def check_noexec_unpack_dir(name: str) -> str | None:
    """nuitka-onefile: its fixed unpack dir on a noexec filesystem (e.g. a hardened /var)."""
    target = unpack_dir(name)
    if target is None:
        return None
    setup = [
        f"mkdir -p {ONEFILE_CACHE}",
        f"mount -t tmpfs -o noexec,size=256m tmpfs {ONEFILE_CACHE}",
    ]
    env = {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION"}
    proc = unshare_run(in_private_mounts(setup, exe_of(name), env))
    return "ok" if version_ok(proc) else f"FAILS ({brief(proc)})"


def elf_files(name: str) -> list[Path]:
    exe = exe_of(name).resolve()
    if name == "zipapp":
        return []
    roots = [exe.parent] if name not in ONEFILE else []
    found = [exe]
    target = unpack_dir(name)
    if target is not None and target.is_dir():
        roots.append(target)
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file() and f != exe and f.read_bytes()[:4] == b"\x7fELF":
                found.append(f)
    return found


def check_ldd(name: str) -> dict[str, Any]:
    """ldd of the executables that get exec'd; the newest GLIBC_ symbol version of any ELF file.

    (ldd of a bundled extension module alone resolves its libraries from the system, since it
    does not know the loader's search path: the runtime view is in ``mapped_outside``.)
    """
    files = elf_files(name)
    execs = [f for f in files if os.access(f, os.X_OK) and not f.name.endswith(".so")]
    libs: set[str] = set()
    glibc: list[tuple[int, ...]] = []
    for f in execs:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (\S+)", line)
            if m:
                libs.add(m.group(2))
            if "not found" in line:
                libs.add(line.strip())
    for f in files:
        syms = subprocess.run(["objdump", "-T", str(f)], capture_output=True, text=True).stdout
        glibc += [tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_([\d.]+)", syms)]
    return {
        "elf_files": len(files),
        "exec_ldd": sorted(libs),
        "max_glibc": ".".join(map(str, max(glibc))) if glibc else None,
    }


def mapped_outside(pids: list[int], own: list[Path]) -> list[str]:
    """Files mapped by ``pids`` that are not part of the build (or what it unpacked)."""
    paths: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    paths.add(parts[5].replace(" (deleted)", ""))
    return sorted(p for p in paths if not any(Path(p).is_relative_to(d) for d in own))


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(k) for k in kids]


def check_sigkill(name: str) -> dict[str, Any]:
    """SIGKILL the plugin mid-ADD (blocked reading stdin, as a runtime's timeout would find it)."""
    with tempfile.TemporaryDirectory(prefix="cbd-native-tmp-") as tmpdir:
        env = {
            "PATH": SYSTEM_PATH,
            "TMPDIR": tmpdir,
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "killed",
            "CNI_NETNS": "/nonexistent",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
        }
        target = unpack_dir(name)
        cache_before = sorted(p.name for p in ONEFILE_CACHE.iterdir()) if target else []
        proc = subprocess.Popen(
            [str(exe_of(name))],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        kids: list[int] = []
        if name in ONEFILE:  # wait for the unpacked runtime to be started
            deadline = time.monotonic() + 10
            while not kids and time.monotonic() < deadline:
                time.sleep(0.02)
                kids = _children(proc.pid)
        time.sleep(0.5)  # the Python side is now blocked reading stdin
        own = [exe_of(name).resolve().parent, Path(tmpdir)]
        if target is not None:
            own.append(target)
        mapped = mapped_outside([proc.pid, *kids], own)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()  # the orphaned child, if any, reads EOF and exits
        orphan_alive = False
        for kid in kids:
            for _ in range(100):
                if not Path(f"/proc/{kid}").exists():
                    break
                time.sleep(0.05)
            else:
                orphan_alive = True
                os.kill(kid, signal.SIGKILL)
        leftovers = sorted(os.listdir(tmpdir))
        size = sum(f.stat().st_size for f in Path(tmpdir).rglob("*") if f.is_file())
        cache_after = sorted(p.name for p in ONEFILE_CACHE.iterdir()) if target else []
        next_run = run_version([str(exe_of(name))], plugin_version_env())
    return {
        "mapped_outside": mapped,
        "orphaned_child": bool(kids),
        "orphan_outlived_eof": orphan_alive,
        "tmpdir_leftovers": len(leftovers),
        "tmpdir_leftover_bytes": size,
        "unpack_dirs_added": sorted(set(cache_after) - set(cache_before)),
        "next_run_ok": version_ok(next_run),
    }


def _burst(
    cmd: list[str], env: dict[str, str], parallel: int
) -> list[subprocess.CompletedProcess[bytes] | None]:
    results: list[subprocess.CompletedProcess[bytes] | None] = [None] * parallel
    gate = threading.Barrier(parallel)

    def go(i: int) -> None:
        gate.wait()
        results[i] = run_version(cmd, env)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def check_concurrent_first_exec(name: str, parallel: int = 20, rounds: int = 5) -> dict[str, Any]:
    """`parallel` VERSION execs started at once, with nothing unpacked yet (as after an install)."""
    failures: list[str] = []
    cold_ms: list[float] = []
    target = unpack_dir(name)
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="cbd-native-tmp-") as tmpdir:
            if target is not None:
                shutil.rmtree(target, ignore_errors=True)
            env = {"PATH": SYSTEM_PATH, "TMPDIR": tmpdir, "CNI_COMMAND": "VERSION"}
            if target is not None:  # one cold exec alone: the first exec after an install
                wall, _, _ = timed([str(exe_of(name))], env, VERSION_IN)
                cold_ms.append(wall)
                shutil.rmtree(target, ignore_errors=True)
            results = _burst([str(exe_of(name))], env, parallel)
            failures += [
                "no result" if r is None else brief(r)
                for r in results
                if r is None or not version_ok(r)
            ]
    return {
        "execs": parallel * rounds,
        "failed": len(failures),
        "errors": sorted(set(failures))[:3],
        "cold_first_exec_ms": round(statistics.median(cold_ms), 1) if cold_ms else None,
    }


def check_symlinked(name: str) -> str | None:
    """Directory builds run through a symlink from another directory (as installed)."""
    if name in ONEFILE or name == "zipapp":
        return None
    with tempfile.TemporaryDirectory() as bindir:
        link = Path(bindir, "cni-bridge-dhcp")
        link.symlink_to(exe_of(name).resolve())
        proc = run_version([str(link)], {"PATH": SCRUBBED_PATH, "CNI_COMMAND": "VERSION"})
    return "ok" if version_ok(proc) else f"FAIL ({brief(proc)})"


def portability(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        log(f"checking {name}")
        checks: dict[str, Callable[[str], Any]] = {
            "scrubbed_env": check_scrubbed,
            "pythonhome_nowhere": check_pythonhome,
            "pythonpath_decoy": check_pythonpath_decoy,
            "python_hidden": check_no_python,
            "behind_symlink": check_symlinked,
            "noexec_tmp": check_noexec_tmp,
            "noexec_unpack_dir": check_noexec_unpack_dir,
            "ldd": check_ldd,
            "blocked_then_sigkill_mid_add": check_sigkill,
        }
        checks["concurrent_first_exec"] = check_concurrent_first_exec
        out[name] = {key: fn(name) for key, fn in checks.items()}
    return out


# -- report ------------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def markdown(data: dict[str, Any]) -> str:
    names = data["names"]
    builds, local, rt = data["builds"], data["local"], data["round_trip"]
    rows = [
        "| build | VERSION | ADD, agent down | ADD round trip | DEL round trip | size | build time |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(d: dict[str, Any], wall: str, cpu: str) -> str:
        return f"{d[wall]['median']:.0f} ms ({d[cpu]['median']:.0f} ms CPU)"

    for n in names:
        b = builds.get(n) or build_info(n)
        secs = b.get("build_seconds")
        rows.append(
            f"| {n} | {cell(local[n], 'version_wall', 'version_cpu')} "
            f"| {cell(local[n], 'down_wall', 'down_cpu')} "
            f"| {cell(rt[n], 'add_wall', 'add_cpu')} "
            f"| {cell(rt[n], 'del_wall', 'del_cpu')} "
            f"| {mib(b['size_bytes'])} | {f'{secs:.0f} s' if secs is not None else '-'} |"
        )
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--skip-build", action="store_true", help="measure the builds already there")
    p.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    p.add_argument("--json", type=Path, default=ROOT / "build" / "native-measure.json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("measure-native: run as root (network namespaces, private mounts)", file=sys.stderr)
        return 2
    names = tuple(args.only)
    data: dict[str, Any] = {"names": names, "runs": args.runs, "nproc": os.cpu_count()}
    data["builds"] = {} if args.skip_build else build_all(names)
    data["load_before"] = os.getloadavg()
    log("local timings (VERSION, ADD agent down)")
    data["local"] = local_timings(names, args.runs)
    log("round trips through a real agent")
    with tempfile.TemporaryDirectory(prefix="cbd-native-") as tmp:
        data["round_trip"] = round_trips(names, args.runs, Path(tmp))
    data["load_after_timing"] = os.getloadavg()
    log("plugin-timing.py cross-check")
    data["plugin_timing"] = plugin_timing(names, args.runs)
    data["checks"] = portability(names)
    target = unpack_dir("nuitka-onefile") if "nuitka-onefile" in names else None
    if target is not None:  # what this run unpacked; the dir is build-native.py's default
        shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(OSError):
            ONEFILE_CACHE.rmdir()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(data))
    print(
        f"\nload average before/after timing: {data['load_before']} / {data['load_after_timing']}"
    )
    for n in names:
        print(f"\n{n}: {data['plugin_timing'][n]}")
        print(json.dumps(data["checks"][n], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
