#!/usr/bin/env python3
"""`make image`: build the DaemonSet image from deploy/Containerfile with podman.

1. the build context, build/image/context: the Python wheels of the package and its
   dependencies (built here, on the host: python-iptables compiles a C extension, and the
   build itself never fetches Python packages), the single-file plugin (build-zipapp.py)
   and deploy/install.py;
2. with ``--base local``, a base image made from Debian packages: ``mmdebstrap`` writes a
   Debian 12 root with python3, python3-venv and the image's tools to build/image/base.tar
   (kept as a cache), ``podman import`` turns it into localhost/cni-bridge-dhcp-base:bookworm;
   for machines that reach the Debian archive but no container registry;
3. ``podman build --build-arg BASE=...``; with the local base the build runs with
   ``--network none`` (it needs nothing from the network), with the registry base with
   ``--network host`` (apt-get in the image; no network of podman's own is created).

Usage: build-image.py [--image REF] [--base registry|local] [--context-only]
Environment: PODMAN (default "podman"; e.g. "podman --root DIR --runroot DIR").
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "image"
DEFAULT_IMAGE = "localhost/cni-bridge-dhcp:0.1.0"
LOCAL_BASE = "localhost/cni-bridge-dhcp-base:bookworm"
PLUGIN = "cni-bridge-dhcp"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3-venv for the image's venv; the rest as the Containerfile's RUN would install
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "iptables",
    "nftables",
    "libnftables1",
    "iproute2",
    "util-linux",
    "ca-certificates",
)


def sh(cmd: list[str], **kw: object) -> None:
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def build_context(context: Path) -> Path:
    if context.exists():
        shutil.rmtree(context)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(ROOT)])
    sh([sys.executable, str(ROOT / "scripts" / "build-zipapp.py"), str(context / PLUGIN)])
    shutil.copy2(ROOT / "deploy" / "install.py", context / "install.py")
    return context


def local_base(podman: list[str]) -> str:
    """localhost/cni-bridge-dhcp-base:bookworm, from Debian packages (cached tarball)."""
    tarball = OUT / "base.tar"
    if not tarball.exists() or tarball.stat().st_size == 0:
        if shutil.which("mmdebstrap") is None:
            sys.exit("build-image: --base local needs mmdebstrap (apt-get install mmdebstrap)")
        partial = OUT / "base.tar.partial"
        # mmdebstrap's root mode mounts /proc, /sys and /dev in the new root while it
        # installs: a private mount namespace keeps those mounts off the machine's table
        sh(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "mmdebstrap",
                "--mode=root",
                "--variant=minbase",
                "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                "--aptopt=Acquire::Languages none",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                SUITE,
                str(partial),
                MIRROR,
            ]
        )
        partial.replace(tarball)
    exists = subprocess.run([*podman, "image", "exists", LOCAL_BASE], stdin=subprocess.DEVNULL)
    if exists.returncode != 0:
        sh([*podman, "import", str(tarball), LOCAL_BASE])
    return LOCAL_BASE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--base", choices=("registry", "local"), default="registry")
    p.add_argument("--context-only", action="store_true", help="stop after the context")
    args = p.parse_args(argv)
    context = build_context(OUT / "context")
    if args.context_only:
        print(context)
        return 0
    podman = shlex.split(os.environ.get("PODMAN", "podman"))
    build = [*podman, "build", "-f", str(ROOT / "deploy" / "Containerfile"), "-t", args.image]
    if args.base == "local":
        build += ["--build-arg", f"BASE={local_base(podman)}", "--network", "none"]
    else:
        build += ["--network", "host"]
    sh([*build, str(context)])
    print(args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
