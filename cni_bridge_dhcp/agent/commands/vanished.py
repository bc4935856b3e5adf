"""Attachments whose pod vanished without a DEL reaching the agent.

A runtime that removes a container while the agent is down (an agent update, podman
`rm -f`) sends its DEL to nobody, and neither podman 4.3 nor containerd 1.6 sends CNI GC
later. At start the agent finds such records (their network namespace is gone, or the
path names another namespace now) and tears them down as a DEL would: the lease is
released from the node (dhcp/node_release.py), the firewall rules and the record go. A
DEL that arrives later finds nothing and succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os

from ...cni.errors import CNIError
from ..datapath.netns import netns_inode, open_netns
from ..datapath.veth import host_veth_state
from ..state.attachments import Attachment, AttachmentState
from .common import teardown
from .types import Services

log = logging.getLogger(__name__)


def netns_gone(att: Attachment) -> bool:
    """True if the attachment's namespace no longer exists (or its path names another).

    A host veth that still exists proves the namespace lives on (a veth pair dies with
    it), whatever its path says (unmounted early, or invisible to us): then keep it.
    """
    if not att.netns:
        return False  # nothing to judge by: keep it
    try:
        fd = open_netns(att.netns)
    except (FileNotFoundError, CNIError):
        gone = True
    else:
        try:
            gone = netns_inode(fd) != att.netns_inode
        finally:
            os.close(fd)
    if gone and att.host_veth and att.role != "ipam":
        exists, _ = host_veth_state(att.host_veth)
        if exists:
            log.warning(
                "%s: netns %s is not there, but host veth %s still is: leaving it",
                att.key,
                att.netns,
                att.host_veth,
            )
            return False
    return gone


async def reap_vanished(services: Services) -> int:
    """Tear down every ready attachment whose pod is gone; returns how many went."""
    removed = 0
    for att in await asyncio.to_thread(services.store.all):
        if att.state != AttachmentState.READY or not await asyncio.to_thread(netns_gone, att):
            continue
        log.warning(
            "%s: pod %s/%s vanished without a DEL (netns %s is gone): tearing it down as "
            "a DEL would (lease released from the node, rules and record removed)",
            att.key,
            att.pod_namespace or "-",
            att.pod_name or "-",
            att.netns,
        )
        try:
            await teardown(services, att, None, None)
        except Exception:
            log.exception("cleanup of vanished pod %s failed; a DEL for it finishes it", att.key)
        else:
            removed += 1
    return removed
