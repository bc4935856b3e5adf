#!/usr/bin/env python3
"""Build the single-file plugin executable (a zipapp) that admins drop into /opt/cni/bin.

Only the plugin side goes in (cni/, plugin/ and the entry modules): they need nothing but the standard library, so the
file runs on any node with python3 >= 3.9. The agent ships separately (pip/venv, image).
"""

from __future__ import annotations

import argparse
import py_compile
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The exec plugin is "these folders and files", nothing else: cni/ (shared CNI types, wire
# protocol, name rules) and plugin/ (skel, agent client, status), plus the entry modules.
# tests/unit/test_plugin_boundary.py checks that the exec path loads nothing outside them.
PLUGIN_DIRS = ("cni", "plugin")
PLUGIN_FILES = ("__init__.py", "__main__.py", "cli.py")


def plugin_modules() -> tuple[str, ...]:
    """Paths relative to the package directory of every module the plugin ships.

    Whole folders, subpackages included: a module added under plugin/ or cni/ ships without
    editing this file.
    """
    pkg = ROOT / "cni_bridge_dhcp"
    found = [p.relative_to(pkg).as_posix() for d in PLUGIN_DIRS for p in (pkg / d).rglob("*.py")]
    return (*PLUGIN_FILES, *sorted(found))


PLUGIN_MODULES = plugin_modules()

MAIN = '''\
"""Entry point of the cni-bridge-dhcp zipapp."""
import sys

# Act as if run with -I: the runtime's environment (PYTHONPATH, user site, cwd) must not
# change which code answers CNI requests. Only this archive and the interpreter's own
# standard library directories stay. The default interpreter line (-IS) already does this,
# before the interpreter imports anything; this keeps it true for a --interpreter without.
_archive = sys.path[0]
_stdlib = (sys.base_prefix, sys.base_exec_prefix)
sys.path[:] = [_archive] + [
    p for p in sys.path[1:] if p.startswith(_stdlib) and "-packages" not in p
]

from cni_bridge_dhcp.cli import console_main

console_main()
'''


# How the file starts Python. With a #! line naming python, the file is a zipapp run by path:
# the interpreter then imports runpy to run __main__.py from the archive, and runpy's
# imports (importlib.util, contextlib, collections, functools...) cost ~5 ms, half of the
# interpreter's own start, on every exec. So by default the file starts as a two-line
# shell script (sh costs ~1 ms) whose exec runs `python3 -c` with the file itself first
# on sys.path: zipimport reads the modules from the archive that follows, and runpy is
# never imported. `python3 <file>` still works (through __main__.py), and so does any zip
# tool. LAUNCH_CODE trims sys.path like MAIN and makes sys.argv[0] the path the runtime
# exec'd (the plugin's name decides its role).
LAUNCH_CODE = (
    "import sys; sys.argv[:1] = []; sys.path[:] = [sys.argv[0]] + [p for p in sys.path "
    'if p.startswith((sys.base_prefix, sys.base_exec_prefix)) and "-packages" not in p]; '
    "from cni_bridge_dhcp.cli import console_main; console_main()"
)
LAUNCHER = """\
#!/bin/sh
# cni-bridge-dhcp, the CNI plugin: Python on the zip archive that follows these lines
exec {interpreter} -c '{code}' "$0" "$@"
exit 127
"""


def launcher(interpreter: str) -> bytes:
    assert "'" not in LAUNCH_CODE and "\n" not in interpreter
    return LAUNCHER.format(interpreter=interpreter, code=LAUNCH_CODE).encode()


def build(output: Path, interpreter: str, *, shebang: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        pkg = staging / "cni_bridge_dhcp"
        pkg.mkdir()
        for name in PLUGIN_MODULES:
            (pkg / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "cni_bridge_dhcp" / name, pkg / name)
            # zipimport loads <module>.pyc next to the source when its magic matches the
            # running interpreter, saving a compile on every exec (~10 ms); any other Python
            # version falls back to the .py. Unchecked hash: no mtime to compare in a zip.
            py_compile.compile(
                str(pkg / name),
                cfile=str(pkg / (name[:-3] + ".pyc")),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        (staging / "__main__.py").write_text(MAIN)
        output.parent.mkdir(parents=True, exist_ok=True)
        if shebang:
            zipapp.create_archive(staging, output, interpreter=interpreter, compressed=False)
        else:
            with output.open("wb") as f:
                f.write(launcher(interpreter))  # zip readers skip data before the archive
                zipapp.create_archive(staging, f, compressed=False)
    output.chmod(0o755)


# The node's system python (Debian/Ubuntu/RHEL/Fedora all have /usr/bin/python3), isolated
# (-I: no PYTHON* variables, user site or cwd) and without site (-S): the plugin is stdlib
# only, and site's .pth files and sitecustomize (distro hooks, certifi...) cost ~5-100 ms on
# every exec. (As a #! line the kernel passes "-IS" as one argument; Python reads -I -S.)
# `/usr/bin/env python3` would find a pyenv shim or venv on PATH first (~130 ms per exec).
DEFAULT_INTERPRETER = "/usr/bin/python3 -IS"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("output", type=Path)
    p.add_argument("--interpreter", default=DEFAULT_INTERPRETER)
    p.add_argument(
        "--shebang",
        action="store_true",
        help="a plain zipapp (#!INTERPRETER, no /bin/sh launcher; ~4 ms slower per exec)",
    )
    args = p.parse_args()
    build(args.output, args.interpreter, shebang=args.shebang)
    how = f"#!{args.interpreter}" if args.shebang else f"/bin/sh launching {args.interpreter}"
    print(f"built {args.output} ({args.output.stat().st_size} bytes, {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
