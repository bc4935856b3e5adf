"""Per-attachment serialisation in the agent (issue 12, item 8).

The agent runs one ADD/DEL/CHECK per attachment key at a time. The lock table used to drop
a key's lock while a woken waiter was about to take it (so a later operation made a fresh
lock and ran alongside), and leaked an entry for every failed operation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent import service
from cni_bridge_dhcp.agent.commands import main_role
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode


def _request(container_id: str = "c1", op: str = "ADD") -> main_role.Request:
    return main_role.Request(
        op=op,
        cni_version="1.0.0",
        container_id=container_id,
        netns="",
        ifname="eth0",
        cni_path="/opt/cni/bin",
        args={},
        raw={"name": "net"},
    )


class Probe:
    """A stand-in handler that records how many operations run at once per key."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.done = 0

    async def __call__(self, agent: service.Agent, r: main_role.Request) -> dict[str, Any]:
        key = r.container_id
        self.running[key] = self.running.get(key, 0) + 1
        self.most[key] = max(self.most.get(key, 0), self.running[key])
        try:
            # Several scheduling rounds: a second operation on the key would overlap here.
            for _ in range(5):
                await asyncio.sleep(0)
            if self.fail:
                raise CNIError(ErrorCode.IO_FAILURE, "induced failure")
            return {}
        finally:
            self.running[key] -= 1
            self.done += 1


@pytest.fixture
def agent(tmp_path: Path) -> service.Agent:
    return service.Agent(tmp_path, firewall_interval=0)


def test_one_operation_per_key_however_many_queue(
    agent: service.Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe()
    monkeypatch.setitem(service._HANDLERS, "ADD", probe)

    async def scenario() -> None:
        first = [asyncio.create_task(agent._dispatch("ADD", _request(), {})) for _ in range(3)]
        # Later arrivals, while the first three are still queued on the key.
        while probe.done < 1:
            await asyncio.sleep(0)
        later = [asyncio.create_task(agent._dispatch("ADD", _request(), {})) for _ in range(3)]
        while probe.done < 2:
            await asyncio.sleep(0)
        later += [asyncio.create_task(agent._dispatch("ADD", _request(), {})) for _ in range(3)]
        await asyncio.gather(*first, *later)

    asyncio.run(scenario())
    assert probe.done == 9
    assert probe.most == {"c1": 1}, "two operations on one attachment ran at the same time"
    assert len(agent._locks) == 0


def test_failed_operations_leave_no_lock_entries(
    agent: service.Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe(fail=True)
    monkeypatch.setitem(service._HANDLERS, "ADD", probe)

    async def scenario() -> None:
        calls = [agent._dispatch("ADD", _request(f"c{i}"), {}) for i in range(20)]
        calls += [agent._dispatch("ADD", _request("c0"), {}) for _ in range(3)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, CNIError) for o in outcomes)

    asyncio.run(scenario())
    assert probe.done == 23
    assert len(agent._locks) == 0, "failed operations leaked lock entries"
