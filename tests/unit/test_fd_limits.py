"""The agent's descriptor budget (issue 12, item 3): the connection bound answers 11, a
client whose request the busy agent did not read still gets that answer, and descriptor
exhaustion anywhere in a request is "try again", not an internal error."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent import server
from cni_bridge_dhcp.agent.runtime import fdlimits
from cni_bridge_dhcp.cni import agent_client as client
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from cni_bridge_dhcp.cni.wire import make_request


class GatedAgent:
    """Holds every ADD until released; fails DEL the way an exhausted agent does."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    async def handle(self, req: dict[str, Any], netns_fd: int | None) -> dict[str, Any]:
        if netns_fd is not None:
            os.close(netns_fd)
        if req["op"] == "DEL":
            try:
                os.open("/nonexistent-dir-for-test/x", os.O_RDONLY)
            except OSError as exc:
                raise OSError(errno.EMFILE, "Too many open files") from exc
        if req["op"] == "CHECK":
            try:
                raise OSError(errno.ENFILE, "Too many open files in system")
            except OSError as exc:
                raise CNIError(ErrorCode.STATE_FAILED, "cannot write state file x") from exc
        self.entered.release()
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        return {"op": req["op"]}


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[tuple[str, GatedAgent]]:
    path = str(tmp_path / "agent.sock")
    agent = GatedAgent()
    sock = server.bind_socket(path)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    srv = server.Server(agent, sock, max_connections=2)  # type: ignore[arg-type]
    thread = threading.Thread(target=lambda: loop.run_until_complete(srv.serve(stop)), daemon=True)
    thread.start()
    try:
        yield path, agent
    finally:
        agent.gate.set()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        sock.close()


def request(op: str = "ADD", padding: int = 0) -> dict[str, Any]:
    env = {"containerId": "c", "netns": "", "ifname": "eth0", "path": "/x", "args": {}}
    return make_request(op, "1.0.0", env, {"name": "n", "pad": "x" * padding}, False)


def test_past_the_bound_requests_get_try_again_and_succeed_later(
    bounded: tuple[str, GatedAgent],
) -> None:
    path, agent = bounded
    results: list[dict[str, Any]] = []
    held = [
        threading.Thread(target=lambda: results.append(client.call(path, request())))
        for _ in range(2)
    ]
    for t in held:
        t.start()
    for _ in held:
        assert agent.entered.acquire(timeout=10)
    # Two in progress = the bound: a third is refused at once with 11, even one whose
    # request is far larger than the socket buffer (the agent never reads it).
    for padding in (0, 600_000):
        with pytest.raises(CNIError) as exc:
            client.call(path, request(padding=padding), response_timeout=5)
        assert exc.value.code == ErrorCode.TRY_AGAIN_LATER
        assert "busy" in exc.value.msg and "limit 2" in exc.value.msg
    agent.gate.set()
    for t in held:
        t.join(10)
    assert results == [{"op": "ADD"}, {"op": "ADD"}]
    assert client.call(path, request(), response_timeout=5) == {"op": "ADD"}


@pytest.mark.parametrize("op", ["DEL", "CHECK"])
def test_descriptor_exhaustion_in_a_request_is_try_again(
    bounded: tuple[str, GatedAgent], op: str
) -> None:
    path, _ = bounded
    with pytest.raises(CNIError) as exc:
        client.call(path, request(op), response_timeout=5)
    assert exc.value.code == ErrorCode.TRY_AGAIN_LATER
    assert "out of file descriptors" in exc.value.msg


@pytest.mark.parametrize(
    ("soft", "expected"),
    [(64, fdlimits.MIN_CONNECTIONS), (1024, 122), (65536, fdlimits.MAX_CONNECTIONS)],
)
def test_default_bound_follows_the_open_file_limit(soft: int, expected: int) -> None:
    assert fdlimits.default_max_connections(soft) == expected
    if soft > 64:
        # The bound times what a connection may hold stays within the limit.
        peak = fdlimits.RESERVED_FDS + expected * fdlimits.FDS_PER_CONNECTION
        assert peak <= soft


def test_raise_nofile_raises_the_soft_limit_to_the_hard_one() -> None:
    code = (
        "import resource;"
        "from cni_bridge_dhcp.agent.runtime.fdlimits import raise_nofile;"
        "print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    out = subprocess.run(
        ["prlimit", "--nofile=100:200", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert out == "(100, 200) (200, 200)"


def test_transient_accept_errors_are_the_ones_the_issue_names() -> None:
    named = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
    assert named == fdlimits.TRANSIENT_ACCEPT_ERRNOS


def test_agent_survives_accept_failing_with_emfile(tmp_path: Path) -> None:
    """A listening socket whose accept() fails with EMFILE three times, then works."""
    path = str(tmp_path / "agent.sock")
    real = server.bind_socket(path)

    class Flaky(socket.socket):
        failures = 3

        def accept(self) -> tuple[socket.socket, Any]:  # type: ignore[override]
            if Flaky.failures:
                Flaky.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return super().accept()

    flaky = Flaky(fileno=os.dup(real.fileno()))
    real.close()
    agent = GatedAgent()
    agent.gate.set()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    srv = server.Server(agent, flaky)  # type: ignore[arg-type]
    thread = threading.Thread(target=lambda: loop.run_until_complete(srv.serve(stop)), daemon=True)
    thread.start()
    try:
        assert client.call(path, request(), response_timeout=10) == {"op": "ADD"}
        assert Flaky.failures == 0 and thread.is_alive()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        flaky.close()


def test_systemd_units_set_an_open_file_limit() -> None:
    units = sorted((Path(__file__).resolve().parents[2] / "examples" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        values = [
            line.split("=", 1)[1].strip()
            for line in unit.read_text().splitlines()
            if line.startswith("LimitNOFILE=")
        ]
        assert values, f"{unit.name} sets no LimitNOFILE="
        soft = values[-1].split(":")[0]
        # Room for MAX_CONNECTIONS at their peak, far above systemd's default of 1024.
        needed = fdlimits.RESERVED_FDS + fdlimits.MAX_CONNECTIONS * fdlimits.FDS_PER_CONNECTION
        assert soft == "infinity" or int(soft) >= needed, unit.name


# Runs with no descriptor left to open: every lookup that needs a socket meets EMFILE.
_EXHAUSTED = r"""
import asyncio, json, os, resource, socket
from cni_bridge_dhcp.agent.datapath.ifindex import interface_index
from cni_bridge_dhcp.agent.dhcp.transport import Target, _interface_present, pod_still_there
from cni_bridge_dhcp.agent.runtime.fdlimits import is_fd_exhaustion

loop = asyncio.new_event_loop()
index_lo = socket.if_nametoindex("lo")
open_now = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
out = {}
try:
    out["glibc"] = socket.if_nametoindex("lo")
except OSError as exc:
    out["glibc"] = [exc.errno, str(exc)]
try:
    out["ours"] = interface_index("lo")
except OSError as exc:
    out["ours"] = [exc.errno, str(exc)]
target = Target("/proc/self/ns/net", "lo", "00:00:00:00:00:00")
try:
    out["present"] = _interface_present(target)
except Exception as exc:
    out["present"] = ["raised", is_fd_exhaustion(exc)]
async def probe():
    return _interface_present(target)
out["kept"] = loop.run_until_complete(pod_still_there(probe(), "net/c/eth0"))
print(json.dumps(out))
"""


def test_interface_lookups_out_of_descriptors_raise_rather_than_read_as_gone() -> None:
    """glibc's if_nametoindex reads EMFILE as "no such interface": a live pod's interface then
    looked vanished and an ADD under fd pressure failed with 5 instead of 11 (seen in CI). A
    journaled lease must not be dropped at start-up for that either."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXHAUSTED], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(proc.stdout)
    assert out["glibc"][0] is None, "glibc now keeps errno: the helper may be unneeded"
    assert out["ours"][0] == errno.EMFILE, out
    assert out["present"] == ["raised", True], out
    assert out["kept"] is True


def test_interface_index_answers_like_the_kernel() -> None:
    from cni_bridge_dhcp.agent.datapath.ifindex import interface_exists, interface_index

    assert interface_index("lo") == socket.if_nametoindex("lo")
    assert interface_exists("lo")
    assert interface_index("cbd-nonexist0") is None
    # Names the kernel cannot hold are absent, never truncated onto another interface.
    assert interface_index("lo" + "x" * 14) is None
    assert interface_index("") is None
    assert interface_index("lo\0x") is None
