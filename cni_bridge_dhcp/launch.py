"""Where the single-file plugin starts: the code on its #! line and its __main__.py both
call ``run`` (scripts/build-zipapp.py).

This module imports nothing but ``sys`` (built in, already loaded) and has no ``from
__future__`` line: it runs before sys.path is trimmed, so under an interpreter started
without -I -S nothing it loads may come from the runtime's cwd, PYTHONPATH or site-packages.
"""

import sys


def run(archive: str) -> None:
    """Keep only ``archive`` and the interpreter's own standard library on sys.path (what the
    runtime's environment holds must not change which code answers CNI requests), then
    answer as the plugin."""
    stdlib = (sys.base_prefix, sys.base_exec_prefix)
    sys.path[:] = [archive] + [
        p for p in sys.path if p != archive and p.startswith(stdlib) and "-packages" not in p
    ]
    from cni_bridge_dhcp.cli import console_main

    console_main()
