"""podman (Debian 4.3) with its CNI backend, run in a sandbox's node namespace.

Every invocation gets private storage (``--root``, ``--runroot``, ``--tmpdir``), the
sandbox's CNI conf dir (``--cni-config-dir``), and ``CONTAINERS_CONF`` pointing at a private
containers.conf; the machine's /etc/containers/storage.conf, /var/lib/containers,
/etc/cni/net.d and /opt/cni/bin are never used. Tests always pass ``--network`` explicitly:
podman's own default network (a bridge with NAT) must never be created anywhere.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from testbed.sandbox import Sandbox, SandboxError
from tests.runtimes.images import Image
from tests.runtimes.nodeexec import NODE_PATH, node_cmd


def _within_hard_limit(which: int, wanted: int) -> int:
    hard = resource.getrlimit(which)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)


def containers_conf(*, plugin_dirs: list[Path], netconf_dir: Path, tmp: Path) -> str:
    # Environment trap: as root podman raises nofile and nproc to its own maxima (1048576,
    # 4194304), above this machine's hard limits, and runc then fails with "error setting
    # rlimits ... operation not permitted". Ask for values within the hard limits instead.
    nofile = _within_hard_limit(resource.RLIMIT_NOFILE, 1024)
    nproc = _within_hard_limit(resource.RLIMIT_NPROC, 4096)
    dirs = ", ".join(f'"{d}"' for d in plugin_dirs)
    return f"""\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = [{dirs}]
network_config_dir = "{netconf_dir}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{tmp}/events.log"
runtime = "runc"
tmp_dir = "{tmp}/libpod-tmp"
volume_path = "{tmp}/volumes"
"""


class Podman:
    """podman commands in ``sb.node`` against private storage and config."""

    def __init__(self, sb: Sandbox, *, plugin_dirs: list[Path]) -> None:
        self.sb = sb
        self.dir = Path(tempfile.mkdtemp(prefix=f"{sb.prefix}-podman-"))
        self.root = self.dir / "root"
        self.runroot = self.dir / "run"
        self.conf = self.dir / "containers.conf"
        self.conf.write_text(
            containers_conf(plugin_dirs=plugin_dirs, netconf_dir=sb.netconf_dir, tmp=self.dir)
        )
        # an empty storage.conf: the machine's /etc/containers/storage.conf is not read
        self.storage_conf = self.dir / "storage.conf"
        self.storage_conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        self.env = {
            "CONTAINERS_CONF": str(self.conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
        }

    def cmd(self, *args: str) -> list[str]:
        return node_cmd(
            self.sb,
            [
                "podman",
                "--root",
                str(self.root),
                "--runroot",
                str(self.runroot),
                "--tmpdir",
                str(self.dir / "libpod-tmp"),
                "--cni-config-dir",
                str(self.sb.netconf_dir),
                "--network-backend",
                "cni",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                *args,
            ],
        )

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.cmd(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PATH": NODE_PATH, **self.env},
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                f"podman {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return proc

    def load(self, image: Image) -> None:
        self("load", "-i", str(image.tarball))
        # podman names an OCI archive's image after its ref.name annotation; tag it as the
        # tests refer to it
        if self("image", "exists", image.ref, check=False).returncode != 0:
            out = self("images", "-q", "--filter", "dangling=true").stdout.split()
            if not out:
                raise SandboxError(f"podman load of {image.tarball} left no image to tag")
            self("tag", out[0], image.ref)

    def stop(self) -> None:
        """Remove every container (podman stops them and runs CNI DEL), then the storage.

        conmon runs `podman container cleanup` after a container exits, asynchronously:
        until that process is gone the storage driver's home (<root>/overlay) may still be
        mounted. Wait for every process using this storage, then reset it, which unmounts
        what is left of it; only a mount that survives that is a leak."""
        self("rm", "-a", "-f", "-t", "0", check=False)
        deadline = time.monotonic() + 20
        while _processes_using(self.dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        self("system", "reset", "--force", check=False)

    def remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _processes_using(directory: Path) -> list[int]:
    """Pids whose command line names ``directory`` (podman, conmon and their cleanups)."""
    needle = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found
