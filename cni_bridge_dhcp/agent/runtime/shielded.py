"""Work that must finish even when the task awaiting it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def to_completion(work: Awaitable[T]) -> T:
    """Await ``work``; if the caller is cancelled meanwhile, still let it finish before the
    cancellation goes on, so whoever cancelled (and awaits the caller) sees it done: a
    cancelled lease task never writes a record or a rule after its canceller removed it."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise
