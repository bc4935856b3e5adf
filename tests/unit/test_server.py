"""The agent socket: permissions, framing limits, garbage, stalled clients, fd passing."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent import server
from cni_bridge_dhcp.cni import agent_client as client
from cni_bridge_dhcp.cni.errors import CNIError
from cni_bridge_dhcp.cni.wire import MAX_MESSAGE, make_request


class EchoAgent:
    """Stands in for the orchestration: reports what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    async def handle(self, req: dict[str, Any], netns_fd: int | None) -> dict[str, Any]:
        self.seen.append((req["op"], netns_fd is not None))
        if netns_fd is not None:
            os.close(netns_fd)
        if req["op"] == "CHECK":
            raise CNIError(104, "drifted")
        return {"op": req["op"]}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, EchoAgent]]:
    path = str(tmp_path / "agent.sock")
    agent = EchoAgent()
    sock = server.bind_socket(path)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    srv = server.Server(agent, sock)  # type: ignore[arg-type]
    thread = threading.Thread(target=lambda: loop.run_until_complete(srv.serve(stop)), daemon=True)
    thread.start()
    try:
        yield path, agent
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        sock.close()


def req(op: str = "ADD") -> dict[str, Any]:
    return make_request(
        op,
        "1.0.0",
        {"containerId": "c", "netns": "", "ifname": "eth0", "path": "/x", "args": {}},
        {"name": "n"},
        False,
    )


def test_socket_is_0600(running: tuple[str, EchoAgent]) -> None:
    path, _ = running
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_round_trip_and_error_transport(running: tuple[str, EchoAgent]) -> None:
    path, _ = running
    assert client.call(path, req("ADD")) == {"op": "ADD"}
    with pytest.raises(CNIError) as exc:
        client.call(path, req("CHECK"))
    assert exc.value.code == 104


def test_netns_fd_is_passed_with_scm_rights(running: tuple[str, EchoAgent], tmp_path: Path) -> None:
    path, agent = running
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        r = req("ADD")
        r["netnsFd"] = True
        client.call(path, r, netns_fd=fd)
    finally:
        os.close(fd)
    assert agent.seen[-1] == ("ADD", True)


def _raw(path: str, data: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">I", 5) + b"hello",
        struct.pack(">I", 4) + b"[12]",
        struct.pack(">I", MAX_MESSAGE + 1),
        b"\xff\xff",
    ],
)
def test_garbage_and_oversize_are_rejected_and_the_agent_survives(
    running: tuple[str, EchoAgent], data: bytes
) -> None:
    path, agent = running
    reply = _raw(path, data)
    if reply:
        assert b'"ok":false' in reply
    assert client.call(path, req("DEL")) == {"op": "DEL"}
    assert ("ADD", False) not in agent.seen


def test_a_stalled_client_does_not_block_others(running: tuple[str, EchoAgent]) -> None:
    path, _ = running
    staller = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staller.connect(path)
    staller.sendall(struct.pack(">I", 100) + b"{")  # promises more, never sends it
    try:
        assert client.call(path, req("ADD"), response_timeout=5) == {"op": "ADD"}
    finally:
        staller.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_non_root_users_cannot_connect(running: tuple[str, EchoAgent]) -> None:
    path, _ = running
    code = (
        "import os,socket,sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(3)\n"
        "sys.exit(0)\n"
    )
    # The socket's directory must be traversable for the test to reach the socket itself.
    os.chmod(os.path.dirname(path), 0o755)
    proc = subprocess.run([sys.executable, "-c", code, path], timeout=30)
    assert proc.returncode == 3


def test_second_agent_refuses_a_live_socket(running: tuple[str, EchoAgent]) -> None:
    path, _ = running
    with pytest.raises(SystemExit):
        server.bind_socket(path)


def test_stale_socket_of_a_dead_agent_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    fresh = server.bind_socket(path)
    fresh.close()


def test_a_non_socket_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    path.write_text("precious")
    with pytest.raises(SystemExit):
        server.bind_socket(str(path))
    assert path.read_text() == "precious"
