"""containerd inside a sandbox's node namespace, driven through the CRI v1 API as kubelet does.

containerd runs in the node's network namespace and a private (slave) mount namespace
(tests/runtimes/nodeexec.py), so the mounts it and its shims make (snapshots, the pod netns bind
mounts under /run/netns, /dev/shm) never appear in the machine's own mount namespace and go
away with the last process in it. Its root, state, config, CNI bin and conf dirs and grpc
socket are private temporary paths; nothing reads the machine's /etc/cni/net.d, /opt/cni/bin
or /var/lib/containerd. What containerd 1.6 and libcni still put in machine paths: empty
directories /run/containerd/s (shim sockets, a fixed root in 1.6; each socket is removed
with its shim) and /var/lib/cni/results (libcni's result cache, one file per attachment,
removed by DEL).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from testbed.sandbox import Daemon, Sandbox, SandboxError, run
from tests.runtimes.images import PAUSE_REF, Image
from tests.runtimes.nodeexec import spawn_in_node

START_TIMEOUT = 30.0
CRI_TIMEOUT = 60.0


def containerd_config(
    *, root: Path, state: Path, socket: Path, bin_dir: Path, conf_dir: Path
) -> str:
    return f"""\
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_REF}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Environment trap: on this kind of machine even root cannot lower oom_score_adj (writing
  # a value below the current one is refused), and containerd's default is to set the
  # sandbox's to -998. Restricting keeps every container at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
"""


@dataclass
class PodSandbox:
    id: str
    name: str
    namespace: str
    uid: str
    ip: str
    pid: int  # the pause process, for nsenter into the pod's network namespace
    additional_ips: tuple[str, ...] = ()  # CRI's other family (dual-stack)


class Containerd:
    """One containerd in ``sb.node`` with a CRI client; ``stop()`` ends it and its pods."""

    def __init__(
        self, sb: Sandbox, *, bin_dir: Path, conf_dir: Path, node: str | None = None
    ) -> None:
        self.sb = sb
        self.node = node or sb.node  # another node namespace on the sandbox's LAN
        self.bin_dir = bin_dir
        self.conf_dir = conf_dir
        # short: the grpc socket path, and containerd's shim sockets derive from it
        self.dir = Path(tempfile.mkdtemp(prefix=f"{sb.prefix}-ctrd-"))
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.socket = self.dir / "c.sock"
        self.config = self.dir / "config.toml"
        self.daemon: Daemon | None = None
        self._channel: grpc.Channel | None = None
        self.runtime: cri_grpc.RuntimeServiceStub
        self.images: cri_grpc.ImageServiceStub
        self.pods: dict[str, PodSandbox] = {}

    def start(self) -> None:
        self.config.write_text(
            containerd_config(
                root=self.root,
                state=self.state,
                socket=self.socket,
                bin_dir=self.bin_dir,
                conf_dir=self.conf_dir,
            )
        )
        self.daemon = spawn_in_node(
            self.sb,
            "containerd",
            ["containerd", "--config", str(self.config)],
            log_path=self.sb.tmp / f"containerd-{self.node}.log",
            node=self.node,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            if not self.daemon.alive() or time.monotonic() > deadline:
                raise SandboxError(f"containerd did not start; log:\n{self.daemon.log()}")
            time.sleep(0.1)
        self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = cri_grpc.RuntimeServiceStub(self._channel)
        self.images = cri_grpc.ImageServiceStub(self._channel)
        while True:
            try:
                self.runtime.Version(cri.VersionRequest(), timeout=5)
                break
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"containerd CRI not ready: {exc}; log:\n{self.daemon.log()}"
                    ) from exc
                time.sleep(0.2)

    def ctr(self, *args: str, timeout: float = 120) -> str:
        cmd = ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args]
        return run(cmd, timeout=timeout).stdout

    def import_image(self, image: Image) -> None:
        self.ctr("images", "import", str(image.tarball))
        status = self.images.ImageStatus(
            cri.ImageStatusRequest(image=cri.ImageSpec(image=image.ref)), timeout=CRI_TIMEOUT
        )
        if not status.image.id:
            raise SandboxError(f"{image.ref} not visible through CRI after ctr import")

    # -- pods ------------------------------------------------------------------------------

    def sandbox_config(
        self,
        name: str,
        *,
        namespace: str = "default",
        uid: str | None = None,
        attempt: int = 0,
        port_mappings: list[tuple[int, int]] | None = None,
    ) -> cri.PodSandboxConfig:
        """The PodSandboxConfig kubelet sends: metadata, hostname, log dir, pod netns."""
        uid = uid or str(uuid.uuid4())
        log_dir = self.dir / "pods" / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(
                name=name, namespace=namespace, uid=uid, attempt=attempt
            ),
            hostname=name,
            log_directory=str(log_dir),
            labels={
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid,
            },
            port_mappings=[
                cri.PortMapping(protocol=cri.TCP, container_port=c, host_port=h)
                for h, c in port_mappings or []
            ],
            linux=cri.LinuxPodSandboxConfig(
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=cri.NamespaceOption(
                        network=cri.POD, pid=cri.CONTAINER, ipc=cri.POD
                    )
                )
            ),
        )

    def run_pod(self, config: cri.PodSandboxConfig) -> PodSandbox:
        resp = self.runtime.RunPodSandbox(
            cri.RunPodSandboxRequest(config=config), timeout=CRI_TIMEOUT
        )
        status = self.runtime.PodSandboxStatus(
            cri.PodSandboxStatusRequest(pod_sandbox_id=resp.pod_sandbox_id, verbose=True),
            timeout=CRI_TIMEOUT,
        )
        info = json.loads(status.info["info"])
        pod = PodSandbox(
            id=resp.pod_sandbox_id,
            name=config.metadata.name,
            namespace=config.metadata.namespace,
            uid=config.metadata.uid,
            ip=status.status.network.ip,
            pid=int(info["pid"]),
            additional_ips=tuple(x.ip for x in status.status.network.additional_ips),
        )
        self.pods[pod.id] = pod
        return pod

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(
            cri.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=CRI_TIMEOUT
        )

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(
            cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=CRI_TIMEOUT
        )
        self.pods.pop(pod_id, None)

    def start_container(
        self, pod: PodSandbox, config: cri.PodSandboxConfig, image: str, command: list[str]
    ) -> str:
        """CreateContainer + StartContainer, as kubelet does after RunPodSandbox."""
        created = self.runtime.CreateContainer(
            cri.CreateContainerRequest(
                pod_sandbox_id=pod.id,
                sandbox_config=config,
                config=cri.ContainerConfig(
                    metadata=cri.ContainerMetadata(name="main", attempt=0),
                    image=cri.ImageSpec(image=image),
                    command=command,
                    log_path="main.log",
                    linux=cri.LinuxContainerConfig(),
                ),
            ),
            timeout=CRI_TIMEOUT,
        )
        self.runtime.StartContainer(
            cri.StartContainerRequest(container_id=created.container_id), timeout=CRI_TIMEOUT
        )
        return created.container_id

    def container_log(self, container_id: str) -> str:
        status = self.runtime.ContainerStatus(
            cri.ContainerStatusRequest(container_id=container_id), timeout=CRI_TIMEOUT
        )
        path = Path(status.status.log_path)
        return path.read_text(errors="replace")[-4000:] if path.exists() else f"<no {path}>"

    def exec_sync(self, container_id: str, cmd: list[str]) -> tuple[int, str]:
        resp = self.runtime.ExecSync(
            cri.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=20),
            timeout=CRI_TIMEOUT,
        )
        return resp.exit_code, resp.stdout.decode() + resp.stderr.decode()

    def pod_run(
        self, pod: PodSandbox, cmd: list[str], *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the pod's network namespace (through its pause process)."""
        return run(["nsenter", "-t", str(pod.pid), "-n", *cmd], check=check, timeout=timeout)

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop and remove every pod through CRI, then end containerd and its shims by pid."""
        if self._channel is not None:
            for pod_id in list(self.pods):
                with contextlib.suppress(grpc.RpcError):
                    self.stop_pod(pod_id)
                with contextlib.suppress(grpc.RpcError):
                    self.remove_pod(pod_id)
            self._channel.close()
            self._channel = None
        shims = self._shim_pids()
        if self.daemon is not None:
            self.daemon.stop()
        for pid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove_dir(self) -> None:
        """Delete the private root/state (after the mount check: never under a mount)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def _shim_pids(self) -> list[int]:
        """containerd-shim processes serving this containerd (their -address is our socket)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    argv[0].endswith(b"containerd-shim-runc-v2")
                    and str(self.socket).encode() in argv
                ):
                    pids.append(int(proc.name))
        return pids
