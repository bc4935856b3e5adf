"""File-descriptor exhaustion (issue 12, item 3): the agent keeps serving, sheds load with
code 11, raises its soft open-file limit, and leaves no half-made pod behind.

The agent runs under a small RLIMIT_NOFILE (prlimit), in the sandbox's node namespace.
"""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.cni import agent_client as client
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from cni_bridge_dhcp.cni.wire import make_request
from testbed.sandbox import Pod, Sandbox
from tests.e2e.helpers import NET, add, agent_report, conflist, container_id, links

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def open_files_limit(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/limits").read_text()
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", text, re.M)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def ping_agent(sb: Sandbox) -> str:
    """ "ok", or the CNI code the agent answered with."""
    try:
        client.call(
            str(sb.agent_socket), make_request("PING", "1.1.0", {}, {}, False), response_timeout=15
        )
    except CNIError as exc:
        return str(exc.code)
    return "ok"


def host_veths(sb: Sandbox) -> set[str]:
    return {n for n in links(sb.node) if n.startswith("veth")}


def assert_no_half_made_pods(sb: Sandbox, pods: list[Pod]) -> None:
    """No record is left pending, every host veth belongs to a record, and exactly the pods
    with a record have an interface."""
    report = agent_report(sb)["pods"]
    assert [p["key"] for p in report if p["state"] != "ready"] == []
    assert host_veths(sb) == {p["hostVeth"] for p in report}, "host veth without a record"
    made = {container_id(pod) for pod in pods if links(pod.name) != ["lo"]}
    assert made == {p["containerId"] for p in report}, "pod interface without a record"


@pytest.mark.parametrize("bound", ["default", "none"])
def test_idle_connections_beyond_the_fd_limit_do_not_stop_the_agent(
    sandbox: Sandbox, bound: str
) -> None:
    """80 idle connections under 64 descriptors. With the default bound the agent answers
    11 past it; without one (--max-connections 200) accept() itself fails with EMFILE."""
    sb = sandbox
    sb.start_dnsmasq()
    extra = ["--max-connections", "200"] if bound == "none" else []
    agent = sb.start_agent(nofile=(64, 64), extra_args=extra)
    conf = conflist(sb)
    first = sb.add_pod("first")
    add(sb, first, conf)

    idle: list[socket.socket] = []
    try:
        for _ in range(80):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(sb.agent_socket))
            idle.append(s)
        time.sleep(1.0)
        assert agent.alive(), f"agent died under 80 idle connections:\n{sb.agent_stderr()}"
        assert sb.agent_socket.exists()
        # While they are held: the agent answers, "try again" at worst.
        answers = {ping_agent(sb) for _ in range(5)}
        assert answers <= {"ok", str(int(ErrorCode.TRY_AGAIN_LATER))}, answers
    finally:
        for s in idle:
            s.close()
    if bound == "none":
        assert "accept() failed: Too many open files" in sb.agent_logs()
    wait_for(lambda: ping_agent(sb) == "ok", 20, "the agent to answer once connections close")
    second = sb.add_pod("second")
    assert add(sb, second, conf)["ips"]
    assert agent.alive() and sb.agent_socket.exists()


def test_soft_open_file_limit_is_raised_to_the_hard_limit_at_start(sandbox: Sandbox) -> None:
    sb = sandbox
    agent = sb.start_agent(nofile=(256, 4096))
    assert open_files_limit(agent.pid) == (4096, 4096)
    assert re.search(r"open-file limit.*256.*4096", sb.agent_logs()), sb.agent_logs()


def _add_outcome(sb: Sandbox, pod: Pod, conf: dict[str, Any]) -> tuple[str, str]:
    """("ok" or the CNI code, the error message) of one ADD."""
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False, timeout=120)
    if proc.returncode == 0:
        return "ok", ""
    try:
        error = json.loads(proc.stderr.strip().splitlines()[-1])
        return str(error["code"]), str(error.get("msg", ""))
    except (ValueError, IndexError, KeyError):
        return f"rc={proc.returncode}", proc.stderr[-300:]


@pytest.mark.parametrize("bound", ["default", "none"])
def test_concurrent_adds_under_fd_pressure_leave_no_half_made_pods(
    sandbox: Sandbox, bound: str
) -> None:
    """With the default bound the agent sheds load before it runs out; without one
    (--max-connections far above what 64 descriptors allow) it runs out for real."""
    sb = sandbox
    sb.start_dnsmasq()
    extra = ["--cleanup-interval", "1"] + (["--max-connections", "64"] if bound == "none" else [])
    agent = sb.start_agent(nofile=(64, 64), extra_args=extra)
    conf = conflist(sb)
    warm = sb.add_pod("warm")
    add(sb, warm, conf)  # bridge, takeover and shared rules exist
    pods = [sb.add_pod(f"p{i}") for i in range(24)]
    with ThreadPoolExecutor(len(pods)) as pool:
        answers = list(pool.map(lambda p: _add_outcome(sb, p, conf), pods))
    outcomes = [code for code, _ in answers]
    assert agent.alive(), f"agent died under fd pressure:\n{sb.agent_stderr()[-3000:]}"
    assert sb.agent_socket.exists()
    # Shed load is "try again" (11), never an internal error.
    assert set(outcomes) <= {"ok", str(int(ErrorCode.TRY_AGAIN_LATER))}, (
        [a for a in answers if a[0] not in ("ok", "11")],
        sb.agent_logs()[-4000:],
    )
    assert "ok" in outcomes
    if bound == "default":
        # The bound derived from the limit sheds load before the agent runs out.
        assert "shedding load" in sb.agent_logs()
        assert "out of file descriptors" not in sb.agent_logs()
    wait_for(
        lambda: all(p["state"] == "ready" for p in agent_report(sb)["pods"]),
        20,
        "the cleanup of pending records",
    )
    assert_no_half_made_pods(sb, [warm, *pods])
    # A retry of what was refused succeeds once the burst is over.
    for pod, outcome in zip(pods, outcomes, strict=True):
        if outcome != "ok":
            assert add(sb, pod, conf)["ips"]
            break


def test_an_undo_step_that_fails_keeps_the_record_for_the_cleanup(sandbox: Sandbox) -> None:
    sb = sandbox
    # No DHCP server: the ADD fails after the veth exists; the veth undo fails (EMFILE).
    sb.start_agent(env={"CNI_BRIDGE_DHCP_FAIL": "undo:veth"})
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 2})
    pod = sb.add_pod("undo")
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0
    assert links(pod.name) != ["lo"], "the injected failure did not leave the veth"
    # The veth is left, but so is its (pending) record: the cleanup can find it.
    pending = [p for p in agent_report(sb)["pods"] if p["state"] == "pending"]
    assert len(pending) == 1 and pending[0]["hostVeth"] in host_veths(sb)

    # The start-up cleanup finishes the job (periodic cleanup: the next test).
    [d for d in sb.daemons if d.name == "agent"][-1].stop()
    sb.start_agent(env={"CNI_BRIDGE_DHCP_FAIL": "undo:veth"})
    assert agent_report(sb)["pods"] == []
    assert host_veths(sb) == set()
    assert links(pod.name) == ["lo"]


def test_the_periodic_cleanup_tears_down_a_pending_record_left_by_a_failed_undo(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    sb.start_agent(
        env={"CNI_BRIDGE_DHCP_FAIL": "undo:veth"}, extra_args=["--cleanup-interval", "1"]
    )
    conf = conflist(sb, ipam={"type": "dhcp", "timeout": 2})
    pod = sb.add_pod("undo")
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0
    wait_for(lambda: links(pod.name) == ["lo"], 15, "the cleanup to remove the pod interface")
    assert host_veths(sb) == set()
    assert agent_report(sb)["pods"] == []
