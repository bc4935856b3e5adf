"""Where the single-file plugin starts: the code on its #! line and its __main__.py both
end in ``run`` (scripts/build-zipapp.py).

This module imports nothing but built-in modules that are already loaded (``sys``,
``marshal``, ``_imp``) and has no ``from __future__`` line: it runs before sys.path is
trimmed, so under an interpreter started without -I -S nothing it loads may come from the
runtime's cwd, PYTHONPATH or site-packages. Its annotations are strings for the same
reason (no typing) and for Python 3.9 (no ``X | Y`` at run time).
"""

import _imp
import marshal
import sys

TYPE_CHECKING = False  # not typing's (see above)
if TYPE_CHECKING:
    from collections.abc import Callable
    from importlib.machinery import ModuleSpec
    from types import CodeType, ModuleType

    # What the build puts before the archive: module name -> (is a package, marshalled code).
    Bundle = dict[str, tuple[bool, bytes]]

# What importlib's own loaders do so that tracebacks name the file the code came from.
_fix_co_filename: "Callable[[CodeType, str], None]" = _imp._fix_co_filename  # type: ignore[attr-defined]


def run(archive: str, *, on_path: bool = True) -> None:
    """Keep only ``archive`` (unless not ``on_path``) and the interpreter's own standard
    library on sys.path (what the runtime's environment holds must not change which code
    answers CNI requests), then answer as the plugin."""
    stdlib = (sys.base_prefix, sys.base_exec_prefix)
    sys.path[:] = [archive] * on_path + [
        p for p in sys.path if p != archive and p.startswith(stdlib) and "-packages" not in p
    ]
    from cni_bridge_dhcp.cli import console_main

    console_main()


def run_bundled(archive: str, modules: "Bundle") -> None:
    """``run``, with our modules served from ``modules``: the #! line's code read them, with
    the file's first lines, from one open of the file, and found them compiled for this interpreter."""
    sys.meta_path.insert(0, BundleFinder(archive, modules))
    # Not on sys.path: every import of the standard library would first have zipimport
    # read the archive's directory (in Python code) to look for it there.
    run(archive, on_path=False)


class BundleFinder:
    """Finder and loader of the modules in the bundle.

    zipimport would read and unmarshal each module twice (the module spec asks its
    get_filename, which loads the code, and exec_module loads it again) and open the
    archive for each read: ~0.35 ms of CPU on a DEL's exec (A/B of 400 interleaved execs).
    """

    def __init__(self, archive: str, modules: "Bundle") -> None:
        self.archive = archive
        self.modules = modules
        self._spec = sys.modules["_frozen_importlib"].ModuleSpec

    def find_spec(
        self, name: str, path: "object" = None, target: "object" = None
    ) -> "ModuleSpec | None":
        entry = self.modules.get(name)
        if entry is None:
            return None
        where = f"{self.archive}/{name.replace('.', '/')}"
        spec: ModuleSpec = self._spec(
            name, self, origin=f"{where}/__init__.py" if entry[0] else f"{where}.py"
        )
        if entry[0]:
            spec.submodule_search_locations = [where]
        spec.has_location = True  # sets __file__, as zipimport does
        return spec

    def create_module(self, spec: "ModuleSpec") -> None:
        return None  # the default module object

    def exec_module(self, module: "ModuleType") -> None:
        code = marshal.loads(self.modules[module.__name__][1])
        _fix_co_filename(code, module.__file__ or self.archive)
        exec(code, module.__dict__)

    def get_source(self, name: str) -> "str | None":
        """For tracebacks (linecache): the source is in the archive as well."""
        import zipimport

        return zipimport.zipimporter(self.archive).get_source(name)
