"""One asyncio lock per key, kept only while someone holds or waits for it.

An entry is counted by its users (the holder and every waiter) and removed when the last
one leaves, whatever way it leaves (success, error, cancellation). Deciding removal from
``lock.locked()`` instead is wrong: between a release and the woken waiter's acquire the
lock reads unlocked, so the entry went while a waiter still held it and a later arrival
made a second lock for the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def busy(self, key: str) -> bool:
        """Whether an operation on ``key`` runs or waits (a cleanup must leave it alone)."""
        return key in self._entries

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._entries.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._entries[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._entries[key]
            if users <= 1:
                del self._entries[key]
            else:
                self._entries[key] = (lock, users - 1)
