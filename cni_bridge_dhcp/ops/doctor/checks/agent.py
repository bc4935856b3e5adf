"""Whether the agent answers on its socket."""

from __future__ import annotations

from ..findings import AGENT, Finding, bad, ok


def check_agent(socket_path: str, error: str | None, socket_exists: bool, pods: int) -> Finding:
    if error is None:
        return ok(AGENT, f"agent answers at {socket_path} ({pods} attachment(s))")
    if socket_exists:
        problem = (
            f"agent does not answer at {socket_path} ({error}); the socket file exists, so "
            "the agent probably died without removing it"
        )
    else:
        problem = f"agent is not running: no socket at {socket_path} ({error})"
    fix = (
        "Every pod ADD fails with CNI error 11 until the agent runs. Start it: "
        "`systemctl start cni-bridge-dhcp.socket` (systemd install), or check the DaemonSet "
        "(`kubectl -n kube-system get pods -l app=cni-bridge-dhcp -o wide` on this node, then "
        "`kubectl logs` of that pod); its log file names the reason it stopped. "
        "If the agent uses another socket, pass it with --socket."
    )
    return bad(AGENT, problem, fix)
