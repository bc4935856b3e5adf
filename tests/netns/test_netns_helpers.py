"""datapath/netns.py: entering a namespace for one call and coming back, and making a nameless
one."""

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
        assert threading.active_count() == before  # no thread per call
        with pytest.raises(ZeroDivisionError):
            run_in_netns(fd, lambda: 1 // 0)  # its exception reaches the caller
        assert _current_inode() == netns_inode(own_netns_fd())  # and the caller came back
    finally:
        os.close(fd)


def test_run_in_netns_returns_to_the_callers_namespace_not_the_process_one() -> None:
    # A caller already inside a namespace (a test's node, a nested call) must come back to
    # it: going "home" to the process's namespace would put node work in the root one.
    outer, inner = new_anonymous_netns(), new_anonymous_netns()
    try:

        def nested() -> tuple[int, int, int]:
            during = run_in_netns(inner, _current_inode)
            with pytest.raises(OSError):
                run_in_netns(inner, lambda: os.stat("/nonexistent"))
            return _current_inode(), during, _current_inode()

        before, during, after = run_in_netns(outer, nested)
        assert (before, during, after) == (
            netns_inode(outer),
            netns_inode(inner),
            netns_inode(outer),
        )
        assert _current_inode() == netns_inode(own_netns_fd())

        seen: list[int] = []
        worker = threading.Thread(target=lambda: seen.append(run_in_netns(inner, _current_inode)))
        worker.start()
        worker.join()
        assert seen == [netns_inode(inner)]
    finally:
        os.close(outer)
        os.close(inner)
