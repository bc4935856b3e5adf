"""The machine's mount table before and after a runtime: what a runtime left behind.

The runtimes share the machine's mount namespace (tests/runtimes/nodeexec.py), so their
snapshot mounts and pod netns bind mounts land in it. After a runtime has been stopped, any
new mount under its private dirs or under /run/netns (except the sandbox namespaces, which
the Sandbox owns and deletes) is a leak: it is unmounted (so the machine stays clean) and
reported.
"""

from __future__ import annotations

from pathlib import Path

from testbed.sandbox import NAME_PREFIX, run


def mount_targets() -> set[str]:
    out = run(["findmnt", "-rn", "-o", "TARGET"], timeout=10).stdout
    # findmnt -r escapes blanks as \x20; targets are compared as printed
    return set(out.splitlines())


def leaked_mounts(before: set[str], private_dirs: list[Path]) -> list[str]:
    """New mounts that belong to a runtime of this test; unmounts them, deepest first."""
    roots = [str(d) for d in private_dirs]
    new = sorted(mount_targets() - before, key=len, reverse=True)
    leaks = [
        t
        for t in new
        if any(t == r or t.startswith(r + "/") for r in roots)
        or (t.startswith("/run/netns/") and not t.startswith(f"/run/netns/{NAME_PREFIX}-"))
    ]
    for target in leaks:
        run(["umount", "-l", target], check=False, timeout=10)
    return leaks
