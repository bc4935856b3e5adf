"""The few ``os`` services the plugin's exec path needs, taken from ``posix`` (built in).

Under -S nothing imports ``os`` before the plugin, and importing it (with the
``_collections_abc`` it pulls in) cost ~0.75 ms of CPU per exec, against ~6 ms for a bare
``python3 -IS -c pass`` (medians of 6 rounds of 200 execs each). Each function does what
its ``os`` counterpart does for these arguments. The agent and the admin commands use ``os``.
"""

from __future__ import annotations

import posix
import sys

_S_IFMT = 0o170000
_S_IFREG = 0o100000


def environ() -> dict[str, str]:
    """The process environment, decoded as ``os.environ`` decodes it."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {
        key.decode(encoding, errors): value.decode(encoding, errors)
        for key, value in posix.environ.items()
    }


def isabs(path: str) -> bool:
    return path.startswith("/")


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def open_regular_file(path: str) -> int | None:
    """A read-only descriptor of ``path`` if it is a regular file (never a device or FIFO),
    else None; OSError when it cannot be looked at."""
    if posix.stat(path).st_mode & _S_IFMT != _S_IFREG:
        return None
    return posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOCTTY | posix.O_NONBLOCK)


close = posix.close
exit_now = posix._exit  # no interpreter teardown (cli.console_main says why)
