#!/usr/bin/env python3
"""Build the CNI plugin as a self-contained executable for nodes without Python.

The same thin plugin as the zipapp (the modules in scripts/build-zipapp.py PLUGIN_MODULES,
entry ``cni_bridge_dhcp.cli:console_main``) is frozen together with the Python runtime, so
the node needs only glibc (>= the build machine's) and nothing else. See docs/NATIVE_BUILDS.md
for the measurements behind the default variant.

Prerequisites (Debian 12): python3, python3-venv, python3-dev, gcc; for the Nuitka variants
also patchelf (``apt-get install -y patchelf``). The build tools are pip-installed, pinned,
into their own venv (default build/venv-native), never into the project's venv.

Usage:
    scripts/build-native.py                       # default variant into build/native/
    scripts/build-native.py --variant nuitka-standalone --out build/native-nuitka
    scripts/build-native.py --install-dir /opt/cni/bin   # build (if stale), then install

Idempotent: the output carries a build id (hash of the plugin sources, the variant and its
flags, the pinned tool versions and the build interpreter); a run whose id matches the
existing output does nothing (``--force`` rebuilds).

Output layout (directory variants):
    <out>/cni-bridge-dhcp-<version>-<id>/cni-bridge-dhcp   the executable and its libraries
    <out>/cni-bridge-dhcp -> cni-bridge-dhcp-<version>-<id>/cni-bridge-dhcp
    <out>/BUILD-INFO.json
Single-file variants put the executable itself at <out>/cni-bridge-dhcp.

Installing a directory variant (``--install-dir``) copies the versioned directory to
<dir>/.cni-bridge-dhcp/ and atomically replaces the symlink <dir>/cni-bridge-dhcp, so a
runtime exec'ing the plugin during an upgrade runs either the old or the new build in full.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "cni-bridge-dhcp"
PACKAGE = "cni_bridge_dhcp"
ENTRY_FILE = "cni_bridge_dhcp_main.py"
ENTRY = '''\
"""Entry point of the self-contained cni-bridge-dhcp plugin."""

from cni_bridge_dhcp.cli import console_main

console_main()
'''

# Pinned so a build id names one exact toolchain.
PYINSTALLER_REQS = ("pyinstaller==6.22.3",)
NUITKA_REQS = ("nuitka==4.3.3", "ordered-set==4.1.0", "zstandard==0.25.0")

DEFAULT_VARIANT = "nuitka-standalone"
DEFAULT_PYTHON = "/usr/bin/python3"  # Debian's: shared and static libpython, python3-dev headers
# Fixed, not under {TEMP}: the unpacked files stay between execs and a noexec /tmp is moot.
DEFAULT_ONEFILE_CACHE = "/var/cache/cni-bridge-dhcp"


@dataclass(frozen=True)
class Variant:
    name: str
    tool: str  # "pyinstaller" | "nuitka"
    onefile: bool

    @property
    def reqs(self) -> tuple[str, ...]:
        return PYINSTALLER_REQS if self.tool == "pyinstaller" else NUITKA_REQS


VARIANTS = {
    v.name: v
    for v in (
        Variant("pyinstaller-onedir", "pyinstaller", onefile=False),
        Variant("pyinstaller-onefile", "pyinstaller", onefile=True),
        Variant("nuitka-standalone", "nuitka", onefile=False),
        Variant("nuitka-onefile", "nuitka", onefile=True),
    )
}


class BuildError(RuntimeError):
    pass


def plugin_modules() -> tuple[str, ...]:
    """PLUGIN_MODULES of scripts/build-zipapp.py: one list for every plugin build."""
    spec = importlib.util.spec_from_file_location("build_zipapp", ROOT / "scripts/build-zipapp.py")
    if spec is None or spec.loader is None:
        raise BuildError("cannot load scripts/build-zipapp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.PLUGIN_MODULES)


def package_version() -> str:
    for line in (ROOT / PACKAGE / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BuildError(f"no __version__ in {PACKAGE}/__init__.py")


def interpreter_id(python: str) -> str:
    """Version and machine of ``python``: what the frozen runtime is made of."""
    out = subprocess.run(
        [python, "-c", "import sys, platform; print(sys.version, platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


def tool_flags(variant: Variant, build_id: str, onefile_cache: str) -> list[str]:
    """The tool's options that shape the output (part of the build id, except the id itself)."""
    if variant.tool == "pyinstaller":
        return ["--onefile" if variant.onefile else "--onedir", "--noconfirm", "--clean"]
    flags = [
        "--mode=onefile" if variant.onefile else "--mode=standalone",
        # like the zipapp's -I: PYTHONPATH, user site and cwd never choose the code
        "--python-flag=isolated,no_site",
        "--static-libpython=yes",
        "--no-progressbar",
        "--update-check=never",  # no network during builds
    ]
    if variant.onefile:
        flags.append(f"--onefile-tempdir-spec={onefile_cache}/{build_id}")
    return flags


def compute_build_id(
    variant: Variant, modules: tuple[str, ...], python_id: str, onefile_cache: str
) -> str:
    h = hashlib.sha256()
    for part in (variant.name, *variant.reqs, python_id, ENTRY):
        h.update(part.encode() + b"\0")
    h.update(" ".join(tool_flags(variant, "<id>", onefile_cache)).encode() + b"\0")
    for name in modules:
        h.update(name.encode() + b"\0" + (ROOT / PACKAGE / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def ensure_venv(venv: Path, python: str, reqs: tuple[str, ...]) -> Path:
    """The build tools' own venv, with the pinned requirements (created or topped up)."""
    vpy = venv / "bin" / "python"
    if vpy.exists() and interpreter_id(str(vpy)) != interpreter_id(python):
        print(f"{venv} was made with another interpreter; recreating it", flush=True)
        shutil.rmtree(venv)
    if not vpy.exists():
        print(f"creating {venv} with {python}", flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, stdin=subprocess.DEVNULL)
    freeze = subprocess.run(
        [str(vpy), "-m", "pip", "freeze"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout.lower()
    if any(r.lower() not in freeze.split() for r in reqs):
        print(f"installing {' '.join(reqs)} into {venv}", flush=True)
        subprocess.run(
            [str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return vpy


def check_prereqs(variant: Variant, python: str) -> None:
    """Fail early, naming the Debian packages, instead of deep inside a tool's log."""
    missing = []
    if not Path(python).exists():
        missing.append(f"{python} (python3)")
    else:
        probe = subprocess.run(
            [python, "-c", "import sysconfig, venv; print(sysconfig.get_paths()['include'])"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if probe.returncode != 0:
            missing.append("python3-venv")
        elif not Path(probe.stdout.strip(), "Python.h").exists():
            missing.append("python3-dev")
    if variant.tool == "nuitka":
        missing += [tool for tool in ("gcc", "patchelf") if shutil.which(tool) is None]
    if missing:
        raise BuildError(
            f"missing: {', '.join(missing)} (Debian: apt-get install -y "
            "python3 python3-venv python3-dev gcc patchelf)"
        )


def stage(staging: Path, modules: tuple[str, ...]) -> Path:
    pkg = staging / PACKAGE
    pkg.mkdir(parents=True)
    for name in modules:
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / PACKAGE / name, pkg / name)
    entry = staging / ENTRY_FILE
    entry.write_text(ENTRY)
    return entry


def run_logged(cmd: list[str], log: Path, cwd: Path) -> None:
    with log.open("w") as fh:
        proc = subprocess.run(
            cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"{cmd[0]} ... failed (exit {proc.returncode}); log {log}:\n{tail}")


def build_pyinstaller(
    vpy: Path, variant: Variant, entry: Path, work: Path, flags: list[str]
) -> Path:
    """Returns the executable (onefile) or the distribution directory (onedir)."""
    dist = work / "dist"
    cmd = [str(vpy), "-m", "PyInstaller", *flags, "--name", NAME, "--paths", str(entry.parent)]
    cmd += ["--distpath", str(dist), "--workpath", str(work / "pyi"), "--specpath", str(work)]
    cmd.append(str(entry))
    run_logged(cmd, work / "build.log", cwd=work)
    return dist / NAME


def build_nuitka(vpy: Path, variant: Variant, entry: Path, work: Path, flags: list[str]) -> Path:
    out = work / "nuitka"
    cmd = [str(vpy), "-m", "nuitka", *flags, f"--output-dir={out}", f"--output-filename={NAME}"]
    cmd.append(str(entry))
    run_logged(cmd, work / "build.log", cwd=entry.parent)
    if variant.onefile:
        return out / NAME
    dists = list(out.glob("*.dist"))
    if len(dists) != 1:
        raise BuildError(f"expected one .dist directory in {out}, found {dists}")
    return dists[0]


def read_info(out: Path) -> dict[str, object]:
    try:
        info: dict[str, object] = json.loads((out / "BUILD-INFO.json").read_text())
        return info
    except (OSError, ValueError):
        return {}


def build(args: argparse.Namespace) -> dict[str, object]:
    variant = VARIANTS[args.variant]
    check_prereqs(variant, args.python)
    out: Path = args.out.resolve()
    modules = plugin_modules()
    python_id = interpreter_id(args.python)
    build_id = compute_build_id(variant, modules, python_id, args.onefile_cache)
    info = read_info(out)
    exe = out / NAME
    if not args.force and info.get("build_id") == build_id and exe.exists():
        print(f"{exe} is up to date ({variant.name}, build {build_id})")
        return info

    vpy = ensure_venv(args.venv.resolve(), args.python, variant.reqs)
    tool_version = subprocess.run(
        [str(vpy), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    flags = tool_flags(variant, build_id, args.onefile_cache)
    versioned = f"{NAME}-{package_version()}-{build_id}"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        entry = stage(work / "stage", modules)
        started = time.monotonic()
        builder = build_pyinstaller if variant.tool == "pyinstaller" else build_nuitka
        product = builder(vpy, variant, entry, work, flags)
        seconds = time.monotonic() - started
        if variant.onefile:
            shutil.copy2(product, new / NAME)
            size = (new / NAME).stat().st_size
        else:
            shutil.copytree(product, new / versioned, symlinks=True)
            (new / NAME).symlink_to(f"{versioned}/{NAME}")
            size = sum(f.stat().st_size for f in (new / versioned).rglob("*") if f.is_file())
        names = {r.split("==")[0].lower() for r in variant.reqs}
        info = {
            "variant": variant.name,
            "build_id": build_id,
            "version": package_version(),
            "directory": None if variant.onefile else versioned,
            "executable": NAME,
            "size_bytes": size,
            "build_seconds": round(seconds, 1),
            "build_python": python_id,
            "tools": [t for t in tool_version if t.split("==")[0].lower() in names],
            "flags": flags,
            "modules": list(modules),
        }
        (new / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
        new.chmod(0o755)
        # swap whole directories: a reader sees the old output or the new one, never a mix
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(new, ignore_errors=True)
    print(f"built {exe} ({variant.name}, build {build_id}, {size} bytes, {seconds:.1f} s)")
    return info


def install(out: Path, info: dict[str, object], dest: Path) -> None:
    """Install into a CNI bin dir; a directory build goes behind an atomically swapped link."""
    dest.mkdir(parents=True, exist_ok=True)
    link = dest / NAME
    tmp_link = dest / f".{NAME}.tmp-{os.getpid()}"
    directory = info.get("directory")
    if not isinstance(directory, str):
        shutil.copy2(out / NAME, tmp_link)
        os.replace(tmp_link, link)
        print(f"installed {link}")
        return
    store = dest / f".{NAME}"
    target = store / directory
    if not target.exists():
        store.mkdir(exist_ok=True)
        staging = store / f".{directory}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out / directory, staging, symlinks=True)
        staging.rename(target)
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(f".{NAME}/{directory}/{NAME}")
    os.replace(tmp_link, link)  # rename(2) over the old link or file: atomic
    others = sorted(p.name for p in store.iterdir() if p.name != directory)
    print(f"installed {link} -> {target}/{NAME}")
    if others:
        # a plugin exec'd from an older build may still be running: leave them to the admin
        print(f"older builds left in {store}: {' '.join(others)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", choices=sorted(VARIANTS), default=DEFAULT_VARIANT)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "native")
    p.add_argument("--venv", type=Path, default=ROOT / "build" / "venv-native")
    p.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter to freeze (and run tools)")
    p.add_argument(
        "--onefile-cache",
        default=DEFAULT_ONEFILE_CACHE,
        help="nuitka-onefile: unpack to <this>/<build id> (kept between execs)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--install-dir", type=Path, help="then install into this CNI bin dir")
    args = p.parse_args()
    if platform.system() != "Linux":
        print("build-native: Linux only", file=sys.stderr)
        return 2
    try:
        info = build(args)
        if args.install_dir is not None:
            install(args.out.resolve(), info, args.install_dir)
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"build-native: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
