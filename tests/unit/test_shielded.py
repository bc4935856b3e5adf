"""A cancelled lease task must not leave work running behind its canceller."""

from __future__ import annotations

import asyncio

import pytest

from cni_bridge_dhcp.agent.runtime.shielded import to_completion


def test_cancelled_caller_waits_for_the_work_before_it_ends() -> None:
    done: list[str] = []

    async def work() -> str:
        await asyncio.sleep(0.05)
        done.append("written")
        return "ok"

    async def go() -> None:
        task = asyncio.create_task(to_completion(work()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The canceller resumes only after the work finished: nothing happens behind it.
        assert done == ["written"]

    asyncio.run(go())


def test_result_and_errors_pass_through() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def go() -> None:
        assert await to_completion(asyncio.sleep(0, result=7)) == 7
        with pytest.raises(ValueError, match="boom"):
            await to_completion(fails())

    asyncio.run(go())
