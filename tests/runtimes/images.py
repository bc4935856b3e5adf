"""OCI image tarballs built offline: a pause image and a busybox image (no registry needed).

CI machines reach the package registries only, never a container registry, so the images the
runtimes need are made here: a static binary of our own that sleeps until signalled (the
sandbox "pause" container), and busybox-static's binary taken out of its Debian package
(``busybox`` and ``busybox-static`` conflict as packages, and the tests need ``busybox``
installed, so the .deb is downloaded and unpacked with ``dpkg-deb -x`` instead). Each image is
written as an OCI image layout in a tar archive, which both ``ctr images import`` and
``podman load`` read.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed.sandbox import REPO_ROOT, SandboxError

BUILD_DIR = REPO_ROOT / "build" / "runtimes"
PAUSE_REF = "localhost/cbd/pause:1"
BUSYBOX_REF = "localhost/cbd/busybox:1"

# Signals without a handler are ignored by a pid-namespace init, so the pause binary installs
# handlers for the ones a runtime sends to stop it; SIGCHLD reaps anything reparented to it.
_PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGCHLD, on_child);
    for (;;) pause();
}
"""

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Image:
    ref: str  # e.g. localhost/cbd/pause:1
    tarball: Path  # an OCI image layout in a tar archive


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise SandboxError(
            f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc.stdout


def _blob(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def _layer(files: dict[str, tuple[bytes, int]], links: dict[str, str]) -> bytes:
    """An uncompressed, reproducible layer tar: ``files`` path -> (content, mode), symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in [*files, *links]} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(links.items()):
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def write_oci_archive(
    out: Path,
    ref: str,
    *,
    files: dict[str, tuple[bytes, int]],
    links: dict[str, str] | None = None,
    entrypoint: list[str],
    cmd: list[str] | None = None,
) -> Image:
    """Write a one-layer OCI image layout archive for ``ref`` to ``out``."""
    blobs: dict[str, bytes] = {}
    layer = _layer(files, links or {})
    layer_digest = _blob(blobs, layer)
    config = {
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {
            **({"Entrypoint": entrypoint} if entrypoint else {}),
            **({"Cmd": cmd} if cmd else {}),
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "tests/runtimes/images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _blob(blobs, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": len(layer),
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    tag = ref.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _blob(blobs, manifest_bytes),
                "size": len(manifest_bytes),
                # containerd names the image from the first, podman from the second
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index, sort_keys=True).encode(),
            **{f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in blobs.items()},
        }
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return Image(ref=ref, tarball=out)


def build_pause_binary(out: Path) -> Path:
    """Compile the pause program statically with gcc (installed by scripts/install-deps)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pause.c"
        src.write_text(_PAUSE_C)
        _run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)])
    return out


def busybox_static_binary(build_dir: Path = BUILD_DIR) -> Path:
    """busybox-static's /bin/busybox, from its .deb (downloaded once, cached in build/)."""
    debs = build_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob("busybox-static_*.deb"))
    if not found:
        try:
            _run(["apt-get", "download", "busybox-static"], cwd=debs)
        except SandboxError:
            # a machine whose package lists were cleaned after install-deps
            _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"])
            _run(["apt-get", "download", "busybox-static"], cwd=debs)
        found = sorted(debs.glob("busybox-static_*.deb"))
        if not found:
            raise SandboxError(f"apt-get download busybox-static left no .deb in {debs}")
    root = build_dir / "busybox-static-root"
    binary = root / "bin" / "busybox"
    if not binary.exists():
        _run(["dpkg-deb", "-x", str(found[-1]), str(root)])
    if not binary.exists():
        raise SandboxError(f"{found[-1]} has no bin/busybox")
    return binary


def build_images(build_dir: Path = BUILD_DIR) -> tuple[Image, Image]:
    """(pause, busybox) OCI archives under ``build_dir``."""
    pause_bin = build_pause_binary(build_dir / "pause")
    pause = write_oci_archive(
        build_dir / "pause.oci.tar",
        PAUSE_REF,
        files={"pause": (pause_bin.read_bytes(), 0o755)},
        entrypoint=["/pause"],
    )
    busybox_bin = busybox_static_binary(build_dir)
    applets = ("sh", "ip", "ping", "sleep", "cat", "wget", "nc", "ifconfig", "udhcpc")
    busybox = write_oci_archive(
        build_dir / "busybox.oci.tar",
        BUSYBOX_REF,
        files={"bin/busybox": (busybox_bin.read_bytes(), 0o755)},
        links={f"bin/{a}": "busybox" for a in applets},
        entrypoint=[],
        cmd=["/bin/sh"],
    )
    return pause, busybox
