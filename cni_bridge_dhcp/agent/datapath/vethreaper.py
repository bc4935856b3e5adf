"""Pod veths deleted in batches, for concurrent DELs.

Deleting a veth makes the kernel wait for RCU grace periods: ~20 ms per RTM_DELLINK on the
6.18 kernel the bench runs on, whether it removes one link or twenty (`ip link del group`:
1 veth 26 ms, 20 veths 27 ms; one by one 20 veths take 460 ms). Deletions also serialize on
the rtnl lock, so 50 pods stopped at once used to wait for 50 deletions in a row.

Here DELs that arrive while a deletion runs wait for the next one, which takes all of them:
their host ends go into one fresh device group, checked to hold exactly those links, and
the group is deleted with one request. A lone DEL is a plain delete, as before. Each DEL
still answers only once its veth is gone.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Callable, Sequence

from .rtnl import Rtnl, RtnlError
from .veth import delete_pod_link

log = logging.getLogger(__name__)

# Device groups the batches use: far from the small numbers /etc/iproute2/group names.
_GROUP_LOW = 0x4342_0000
_GROUP_HIGH = 0x7FFF_FFFF

Outcome = bool | BaseException  # deleted (False: it was already gone), or why not
BatchDelete = Callable[[Sequence[str]], dict[str, Outcome]]
PodSideDelete = Callable[[int | None, str, str | None], bool]


def delete_host_links(names: Sequence[str]) -> dict[str, Outcome]:
    """Delete the node's links ``names`` (host veth ends) with as few requests as it can."""
    out: dict[str, Outcome] = {}
    with Rtnl() as node:
        found: dict[str, int] = {}
        for name in names:
            link = node.get_link(name=name)
            if link is None:
                out[name] = False
            else:
                found[name] = link.index
        if len(found) > 1:
            found = _delete_as_group(node, found, out)
        for name, index in found.items():
            try:
                out[name] = node.del_link(index)
            except RtnlError as exc:
                out[name] = exc
    return out


def _delete_as_group(node: Rtnl, found: dict[str, int], out: dict[str, Outcome]) -> dict[str, int]:
    """Delete ``found`` as one device group; returns what is left to delete one by one."""
    used = set(node.link_groups().values())
    group = random.randint(_GROUP_LOW, _GROUP_HIGH)
    while group in used:
        group = random.randint(_GROUP_LOW, _GROUP_HIGH)
    grouped: dict[str, int] = {}
    for name, index in found.items():
        try:
            node.set_link(index, group=group)
            grouped[name] = index
        except RtnlError as exc:
            out[name] = False if exc.errno == errno.ENODEV else exc
    members = {index for index, g in node.link_groups().items() if g == group}
    if members != set(grouped.values()):
        # Another link joined the group: never delete what is not ours.
        log.warning(
            "device group %d holds links other than the pods' veths; deleting one by one", group
        )
        return grouped
    try:
        node.del_group(group)
    except RtnlError as exc:
        log.warning(
            "deleting %d pod veths as group %d failed (%s); one by one", len(grouped), group, exc
        )
        return grouped
    out.update(dict.fromkeys(grouped, True))
    return {}


class VethReaper:
    """Deletes pod veths for DELs, batching those that wait together (module docstring)."""

    def __init__(
        self,
        delete_batch: BatchDelete = delete_host_links,
        delete_pod_side: PodSideDelete = delete_pod_link,
    ) -> None:
        self._delete_batch = delete_batch
        self._delete_pod_side = delete_pod_side
        self._waiting: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def delete(self, netns_fd: int | None, ifname: str, host_name: str | None) -> bool:
        """Delete one pod's veth pair; True when this call deleted it."""
        if host_name:
            outcome = await self._queue(host_name)
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome:
                return True
        # No host end (an old record, or it is gone): the pod side, if it is still there.
        return await asyncio.to_thread(self._delete_pod_side, netns_fd, ifname, None)

    async def _queue(self, host_name: str) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(host_name, []).append(fut)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await fut

    async def _work(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                outcomes = await asyncio.to_thread(self._delete_batch, list(batch))
            except Exception as exc:
                outcomes = dict.fromkeys(batch, exc)
            if len(batch) > 1:
                log.debug("deleted %d pod veths in one batch", len(batch))
            for name, futures in batch.items():
                outcome = outcomes.get(name, False)
                for fut in futures:
                    if not fut.done():
                        fut.set_result(outcome)
