"""The DaemonSet image (make image), built offline and run as its DaemonSet pod would be.

``build_daemonset_image`` runs scripts/build-image.py with the local base (Debian packages
through mmdebstrap, no registry) against a private podman storage, then saves the image as
an OCI archive that each test loads into its own podman (tests/runtimes/podman.py).
``DaemonSetPod`` starts it like examples/kubernetes/daemonset.yaml: privileged, the node's
network namespace, the same host paths mounted (CNI bin and conf dirs, /var/run/netns with
HostToContainer propagation = rslave, /run/xtables.lock, the state and socket dirs), the
configmap's settings as environment. The host paths are the sandbox's private directories;
the socket and state dirs are mounted at their own path so the conflist's agentSocket is
valid on both sides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.sandbox import NETNS_DIR, REPO_ROOT, Sandbox, SandboxError, run
from tests.runtimes.images import BUILD_DIR, Image
from tests.runtimes.nodeexec import NODE_PATH
from tests.runtimes.podman import Podman, containers_conf

IMAGE_REF = "localhost/cni-bridge-dhcp:0.1.0"
CONFIGMAP = REPO_ROOT / "examples" / "kubernetes" / "configmap.yaml"


def build_daemonset_image() -> Image:
    """make image IMAGE_BASE=local into a private storage, saved as an OCI archive."""
    work = Path(tempfile.mkdtemp(prefix="cbd-image-"))
    try:
        conf = work / "containers.conf"
        # the build uses --network none; the CNI dirs only have to be valid
        conf.write_text(
            containers_conf(plugin_dirs=[Path("/usr/lib/cni")], netconf_dir=work, tmp=work)
        )
        podman = f"podman --root {work}/root --runroot {work}/run --tmpdir {work}/tmp"
        env = {**os.environ, "PATH": NODE_PATH, "CONTAINERS_CONF": str(conf), "PODMAN": podman}
        # The script, not `make image`: make's venv prerequisite would rebuild the venv with
        # the node PATH's python3 whenever pyproject.toml is newer than the venv's stamp.
        cmd = [
            sys.executable, str(REPO_ROOT / "scripts" / "build-image.py"),
            "--image", IMAGE_REF, "--base", "local",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise SandboxError(f"make image failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        out = BUILD_DIR / "daemonset.oci.tar"
        out.unlink(missing_ok=True)
        save = [*podman.split(), "save", "--format", "oci-archive", "-o", str(out), IMAGE_REF]
        subprocess.run(save, env=env, check=True, capture_output=True, timeout=300)
        return Image(ref=IMAGE_REF, tarball=out)
    finally:
        # the storage's overlay mounts go with `podman system reset`; then the directory
        subprocess.run(
            [
                "podman",
                "--root",
                f"{work}/root",
                "--runroot",
                f"{work}/run",
                "system",
                "reset",
                "-f",
            ],
            capture_output=True,
            timeout=120,
            env={**os.environ, "PATH": NODE_PATH, "CONTAINERS_CONF": str(work / "containers.conf")},
        )
        shutil.rmtree(work, ignore_errors=True)


def configmap_settings() -> dict[str, str]:
    import yaml

    doc = yaml.safe_load(CONFIGMAP.read_text())
    return {str(k): str(v) for k, v in doc["data"].items()}


class DaemonSetPod:
    """The DaemonSet's container for one simulated node (a sandbox's node namespace)."""

    def __init__(
        self, sb: Sandbox, podman: Podman, image: Image, *, node: str | None = None
    ) -> None:
        self.sb, self.podman, self.image = sb, podman, image
        self.node = node or sb.node
        tag = "" if node is None else f"-{node.rsplit('-', 1)[-1]}"
        self.host = sb.tmp / f"host{tag}"
        self.bin_dir = self.host / "opt" / "cni" / "bin"
        self.conf_dir = self.host / "etc" / "cni" / "net.d"
        self.state_dir = sb.tmp / f"ds-state{tag}"
        self.sock_dir = podman.dir / f"agent{tag}"  # short: a unix socket path
        self.socket = self.sock_dir / "agent.sock"
        for d in (self.bin_dir, self.conf_dir, self.state_dir, self.sock_dir):
            d.mkdir(parents=True, exist_ok=True)
        # what a node's CNI package put in /opt/cni/bin (copies: a symlink would dangle in
        # the container, and PORTMAP=auto looks for portmap there)
        for name in ("loopback", "portmap"):
            shutil.copy2(Path("/usr/lib/cni") / name, self.bin_dir / name)
        self.name = f"{sb.prefix}-ds{tag}"

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **configmap_settings(),
            "LOG_LEVEL": "debug",
            "AGENT_SOCKET": str(self.socket),
            "STATE_DIR": str(self.state_dir),
            **overrides,
        }

    def run_args(self, env: dict[str, str]) -> list[str]:
        xtables_lock = Path("/run/xtables.lock")
        if not xtables_lock.exists():
            xtables_lock.touch()  # what iptables itself creates on first use
        args = [
            "--privileged",
            "--network", f"ns:{NETNS_DIR / self.node}",
            "-v", f"{self.bin_dir}:/host/opt/cni/bin",
            "-v", f"{self.conf_dir}:/host/etc/cni/net.d",
            "-v", f"{NETNS_DIR}:/var/run/netns:rslave",
            "-v", f"{xtables_lock}:/run/xtables.lock",
            "-v", f"{self.state_dir}:{self.state_dir}",
            "-v", f"{self.sock_dir}:{self.sock_dir}",
        ]  # fmt: skip
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        return args

    def start(self, **overrides: str) -> None:
        self.podman(
            "run", "-d", "--name", self.name, *self.run_args(self.env(**overrides)), self.image.ref
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists() and list(self.conf_dir.glob("*.conflist")):
                probe = run(
                    [
                        "python3",
                        "-c",
                        f"import socket; s=socket.socket(socket.AF_UNIX); s.connect({str(self.socket)!r})",
                    ],
                    check=False,
                    timeout=10,
                )
                if probe.returncode == 0:
                    return
            state = self.podman("inspect", "-f", "{{.State.Status}}", self.name, check=False).stdout
            if state.strip() in ("exited", "stopped"):
                break
            time.sleep(0.3)
        raise SandboxError(f"DaemonSet container not ready; logs:\n{self.logs()}")

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-6000:]

    def sigterm(self) -> None:
        """What a DaemonSet update does to the old pod: SIGTERM, then wait for the exit."""
        self.podman("stop", "-t", "20", self.name)

    def restart(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.podman("start", self.name)
        self.wait_ready()
