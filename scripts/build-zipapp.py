#!/usr/bin/env python3
"""Build the single-file plugin executable (a zipapp) that admins drop into /opt/cni/bin.

Only the plugin side goes in (cni/, plugin/ and the entry modules): they need nothing but the standard library, so the
file runs on any node with python3 >= 3.9. The agent ships separately (pip/venv, image).
"""

from __future__ import annotations

import argparse
import importlib.util
import marshal
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
PLUGIN_FILES = ("__init__.py", "__main__.py", "cli.py", "launch.py")


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
"""Entry point of the cni-bridge-dhcp zipapp run as `python3 <file>` (runpy)."""
import sys

from cni_bridge_dhcp.launch import run

run(sys.path[0])  # the archive: runpy puts it first
'''


# How the file starts Python. With a #! line naming python and the file as its script, the
# interpreter imports runpy to run __main__.py from the archive, and runpy's imports
# (importlib.util, contextlib, collections, functools...) cost ~5 ms, half of the
# interpreter's own start, on every exec. So the #! line runs `python3 -IS -c CODE` instead:
# the kernel passes everything after the interpreter's path as one argument, and Python reads
# "-ISc<code>" as -I -S -c <code>; the file's path follows it. runpy is never imported, and
# no /bin/sh runs in between (a two-line sh launcher cost ~0.6-0.9 ms of CPU more per exec: a
# second execve and dash's start). `python3 <file>` still works (through __main__.py), and so
# does any zip tool: zip readers skip what comes before the archive.
#
# What comes before it: the #! line, a line with the length of the bundle, and the bundle, a
# marshalled (magic number, STAGE2 source, {module: (is a package, marshalled code)}). Only
# the code objects depend on the Python version, so LAUNCH_CODE loads the bundle whatever the
# node runs and STAGE2 (source, compiled there) checks the magic number before it unmarshals
# any code. Where the node's Python is the build's, our modules come from the bundle
# (cni_bridge_dhcp.launch.BundleFinder: ~0.5 ms of CPU less per DEL than zipimport); elsewhere
# zipimport reads them from the archive, compiling the .py files where the .pyc files do not
# match. LAUNCH_CODE leaves sys.argv[0] the path the runtime exec'd (the plugin's name decides
# its role); launch.run trims sys.path (a no-op under -IS; it keeps an --interpreter without
# -I/-S from loading the runtime's site-packages). It is short: the whole line must fit the
# kernel's buffer.
LAUNCH_CODE = (
    "import sys,marshal as M;a=sys.argv;del a[0];f=open(a[0],'rb');f.readline();"
    "m=M.loads(f.read(int(f.readline())));f.close();exec(m[1])"
)
STAGE2 = """\
if m[0] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
    g = {"__name__": "cni_bridge_dhcp.launch"}
    exec(M.loads(m[2]["cni_bridge_dhcp.launch"][1]), g)
    g["run_bundled"](a[0], m[2])
else:
    sys.path.insert(0, a[0])
    from cni_bridge_dhcp.launch import run
    run(a[0])
"""
# The kernel reads a #! line from the first BINPRM_BUF_SIZE (256) bytes and cuts longer
# arguments without a word (fs/binfmt_script.c): a cut CODE would fail on every exec.
SHEBANG_MAX = 256


class InterpreterError(ValueError):
    pass


def launcher(interpreter: str) -> bytes:
    """The #! line running ``interpreter`` ("PATH [-FLAGS]", e.g. "/usr/bin/python3 -IS")
    on LAUNCH_CODE and the file."""
    path, *options = interpreter.split()
    flags = "".join(o[1:] for o in options)
    # flags that take a value (-W, -X, -m, -c) would swallow the -c that follows them
    if not path.startswith("/") or any(
        len(o) < 2 or o[0] != "-" or not o[1:].isalpha() or set(o[1:]) & set("WXmc")
        for o in options
    ):
        raise InterpreterError(
            f"--interpreter {interpreter!r}: want an absolute path and single-letter flags "
            "that take no value "
            "(e.g. '/usr/bin/python3 -IS'); --shebang takes any interpreter line"
        )
    line = f"#!{path} -{flags}c{LAUNCH_CODE}\n".encode()
    if len(line) > SHEBANG_MAX:
        raise InterpreterError(
            f"--interpreter {interpreter!r}: the #! line would be {len(line)} bytes, over the "
            f"kernel's {SHEBANG_MAX}; use a shorter path (a symlink) or --shebang"
        )
    return line


def module_name(relative: str) -> tuple[str, bool]:
    """The dotted name of the module at ``relative`` (to the package) and whether it is a
    package: "cni/__init__.py" -> ("cni_bridge_dhcp.cni", True)."""
    parts = ["cni_bridge_dhcp", *relative[: -len(".py")].split("/")]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def bundle() -> bytes:
    """The length line and the bundle that follow the #! line (see LAUNCH_CODE)."""
    modules: dict[str, tuple[bool, bytes]] = {}
    for relative in PLUGIN_MODULES:
        if relative == "__main__.py":
            continue  # runpy's entry, for `python3 <file>` only
        name, is_package = module_name(relative)
        source = (ROOT / "cni_bridge_dhcp" / relative).read_bytes()
        # dont_inherit: this script's own __future__ flags must not leak into the plugin's code
        code = compile(source, f"cni_bridge_dhcp/{relative}", "exec", dont_inherit=True)
        modules[name] = (is_package, marshal.dumps(code))
    blob = marshal.dumps((importlib.util.MAGIC_NUMBER, STAGE2, modules), 4)
    return b"%d\n" % len(blob) + blob


def build(output: Path, interpreter: str, *, shebang: bool = False) -> None:
    # a bad interpreter fails before any work
    head = b"" if shebang else launcher(interpreter) + bundle()
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
                f.write(head)
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
        help="a plain zipapp (#!INTERPRETER running __main__.py through runpy; ~5 ms slower "
        "per exec, but any interpreter line works, e.g. '/usr/bin/env python3')",
    )
    args = p.parse_args()
    try:
        build(args.output, args.interpreter, shebang=args.shebang)
    except InterpreterError as exc:
        sys.stderr.write(f"build-zipapp: {exc}\n")
        return 2
    how = f"#!{args.interpreter}" + ("" if args.shebang else " -c (launch code)")
    print(f"built {args.output} ({args.output.stat().st_size} bytes, {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
