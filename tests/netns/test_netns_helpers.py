"""datapath/netns.py: entering a namespace, and making a nameless one, from a throwaway thread."""

from __future__ import annotations

import os
import threading

import pytest

from cni_bridge_dhcp.agent.datapath.netns import (
    is_netns_fd,
    netns_inode,
    new_anonymous_netns,
    own_netns_fd,
    run_in_netns,
    same_netns,
)


def _current_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_new_anonymous_netns_and_run_in_it() -> None:
    fd = new_anonymous_netns()
    try:
        assert is_netns_fd(fd) and not same_netns(fd, own_netns_fd())
        before = threading.active_count()
        assert run_in_netns(fd, _current_inode) == netns_inode(fd)
        assert _current_inode() == netns_inode(own_netns_fd())  # the caller never moved
        assert threading.active_count() == before  # the thread that entered it is gone
        with pytest.raises(ZeroDivisionError):
            run_in_netns(fd, lambda: 1 // 0)  # its exception reaches the caller
    finally:
        os.close(fd)
