"""Open and validate network namespaces by path, and run code inside them.

``setns`` changes only the calling thread. ``run_in_netns`` moves the calling thread in
for one call and back to where it was (a thread spawned per call cost ~150 us of CPU and
two context switches, about eight times per ADD/DEL pair). Sockets created while inside
keep that namespace for their lifetime, which is how DHCP and netlink sockets for a pod
are made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable
from typing import TypeVar

from ...cni.errors import CNIError, ErrorCode

CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # ioctl from linux/nsfs.h: returns the CLONE_NEW* type of an nsfs fd

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def is_netns_fd(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def open_netns(path: str) -> int:
    """Open ``path`` as a network namespace, or raise CNIError.

    Missing path raises FileNotFoundError (DEL treats that as success); anything that
    exists but is not a network namespace is a CNI error naming the path. Never creates.
    """
    if not path or not os.path.isabs(path):
        raise CNIError(ErrorCode.INVALID_ENV, f"CNI_NETNS must be an absolute path, got {path!r}")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"CNI_NETNS {path!r} is not a network namespace",
                f"it is a {kind}; expected a bind-mounted netns such as /var/run/netns/<name>",
            )
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CNIError(ErrorCode.INVALID_ENV, f"CNI_NETNS {path!r} is a symlink loop") from exc
        raise CNIError(
            ErrorCode.IO_FAILURE, f"cannot open CNI_NETNS {path!r}: {exc.strerror}"
        ) from exc
    return validate_netns_fd(fd, path)


def validate_netns_fd(fd: int, label: str) -> int:
    """Check ``fd`` is a network namespace that is not the agent's own; close it if not."""
    try:
        if not is_netns_fd(fd):
            kind = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"CNI_NETNS {label!r} is not a network namespace",
                f"it is a {kind}; expected a bind-mounted netns such as /var/run/netns/<name>",
            )
        if same_netns(fd, own_netns_fd()):
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"CNI_NETNS {label!r} is the node's own network namespace",
                "a pod must have its own network namespace",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


_own_fd: int | None = None
_own_lock = threading.Lock()


def own_netns_fd() -> int:
    """An fd of the namespace the agent started in (the node's), opened once."""
    global _own_fd
    with _own_lock:
        if _own_fd is None:
            _own_fd = os.open(f"/proc/{os.getpid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return _own_fd


def same_netns(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def netns_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def run_in_netns(fd: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` with the calling thread inside the namespace ``fd``; return its result.

    The thread goes back to the namespace it was in (not the process's: a caller may itself
    run inside one, as the tests' node namespaces do), whatever ``fn`` did.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
        try:
            return fn()
        finally:
            _go_back(back)
    finally:
        os.close(back)


def _go_back(back: int) -> None:
    try:
        setns(back, CLONE_NEWNET)
    except OSError as exc:
        # The thread is stranded in a pod's namespace and would do later node-side work
        # (netlink, firewall, sysctls) there. The agent is crash-safe (journals, start-up
        # recovery): ending it is safer than going on. setns to a held netns fd fails only
        # on ENOMEM or a lost CAP_SYS_ADMIN.
        os.write(2, f"netns: cannot return a thread to its namespace ({exc}); exiting\n".encode())
        os._exit(70)


def new_anonymous_netns() -> int:
    """An fd of a brand-new, nameless network namespace (the fd is its only reference)."""

    def open_own() -> int:
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    return _in_own_thread(_unshare_net, open_own, "netns-new")


def _unshare_net() -> None:
    # unshare() moves only the calling (short-lived) thread; the fd opened after outlives it.
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _in_own_thread(enter: Callable[[], None], fn: Callable[[], T], name: str) -> T:
    """Run ``enter`` then ``fn`` in a new thread that then ends; re-raise what it raised."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            enter()
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
