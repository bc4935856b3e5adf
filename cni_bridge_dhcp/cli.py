"""Console entry: routes to the CNI plugin (no arguments) or an admin subcommand.

Plugin mode must stay standard-library only and cheap to import: subcommand modules are
imported only when that subcommand runs.
"""

from __future__ import annotations

import sys

from .cni import lean_os

TYPE_CHECKING = False  # not typing's: the exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

USAGE = """\
usage: cni-bridge-dhcp                       run as a CNI plugin (CNI_COMMAND in the environment)
       cni-bridge-dhcp daemon [options]      run the agent (see `daemon --help`)
       cni-bridge-dhcp status [--socket P]   show uplink, bridge, firewall and pod leases
       cni-bridge-dhcp uplink restore [--force] [--state-dir D] [--socket P]
       cni-bridge-dhcp doctor [--json] [--probe-dhcp] [--server-leases FILE] [--root DIR]
                                             diagnose this node (exit 1 on problems)
       cni-bridge-dhcp version
"""

# Where the README's install puts the full package (agent, doctor, uplink restore).
FULL_INSTALL = "/opt/cni-bridge-dhcp/venv/bin/cni-bridge-dhcp"


def needs_full_install(command: str, exc: ImportError) -> int:
    """The single-file plugin carries no agent code: say so, and where the full install is."""
    sys.stderr.write(
        f"cni-bridge-dhcp {command} needs the installed package (pip/venv, e.g. "
        f"{FULL_INSTALL}, or the DaemonSet image); the single-file plugin carries only "
        f"the CNI plugin ({exc})\n"
    )
    return 2


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    if not argv:
        if "CNI_COMMAND" not in env and sys.stdin.isatty():
            sys.stderr.write(USAGE)
            return 2
        from .plugin.skel import plugin_main

        return plugin_main(env)
    command, rest = argv[0], list(argv[1:])
    if command == "daemon":
        try:
            from .agent.server import daemon_main
        except ImportError as exc:
            return needs_full_install(command, exc)
        return daemon_main(rest)
    if command == "status":
        from .plugin.status import status_main

        code: int = status_main(rest)
        return code
    if command == "uplink":
        try:
            # status ships in the zipapp; uplink restore drives agent code, which does not.
            from .ops.uplink_restore import uplink_main
        except ImportError as exc:
            return needs_full_install(command, exc)
        restored: int = uplink_main(rest)
        return restored
    if command == "doctor":
        try:
            from .ops.doctor import doctor_main
        except ImportError as exc:
            return needs_full_install(command, exc)
        result: int = doctor_main(rest)
        return result
    if command in ("version", "--version"):
        from . import __version__
        from .cni.result import SUPPORTED_VERSIONS

        print(f"cni-bridge-dhcp {__version__} (CNI {', '.join(SUPPORTED_VERSIONS)})")
        return 0
    if command in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(f"cni-bridge-dhcp: unknown command {command!r}\n{USAGE}")
    return 2


def console_main() -> None:
    argv = sys.argv[1:]
    code = main(argv, lean_os.environ())
    if argv:
        sys.exit(code)
    # A plugin exec ends without the interpreter's teardown (freeing every module and
    # object: ~1.5-2 ms of CPU of a ~10 ms exec, on every CNI call). Nothing else is buffered
    # or owed at exit on this path: the answer is on stdout, flushed here.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the runtime closed the pipe: as the interpreter would exit then
        code = 120
    lean_os.exit_now(code)
