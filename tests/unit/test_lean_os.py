"""cni/lean_os.py stands in for ``os`` on the plugin's exec path: same answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni_bridge_dhcp.cni import lean_os

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("lang", ["C", "C.UTF-8", "en_US.ISO-8859-1"])
def test_the_environment_reads_as_os_environ_reads_it(lang: str) -> None:
    """Bytes that are not UTF-8 (a runtime passing CNI_ARGS through) decode as os.environ
    decodes them, whatever the locale."""
    code = (
        "import os; from cni_bridge_dhcp.cni import lean_os; "
        "print(lean_os.environ() == dict(os.environ), len(lean_os.environ()))"
    )
    env = {
        b"PATH": b"/usr/bin:/bin",
        b"LANG": lang.encode(),
        b"CNI_ARGS": b"K8S_POD_NAME=caf\xc3\xa9;X=\xff\xfe",
        b"ODD\xe9": b"v",
        b"PYTHONPATH": str(ROOT).encode(),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True" and int(out[1]) >= 5


@pytest.mark.parametrize("path", ["/a/b/c", "/a/b/", "a/b", "", "/", "c", "//x", "/a//b"])
def test_path_answers_match_os_path(path: str) -> None:
    assert lean_os.isabs(path) == os.path.isabs(path)
    assert lean_os.basename(path) == os.path.basename(path)


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    regular = tmp_path / "netns"
    regular.write_bytes(b"")
    fd = lean_os.open_regular_file(str(regular))
    assert fd is not None
    lean_os.close(fd)
    assert lean_os.open_regular_file(str(tmp_path)) is None  # a directory
    assert lean_os.open_regular_file("/dev/null") is None  # a device
    with pytest.raises(FileNotFoundError):
        lean_os.open_regular_file(str(tmp_path / "absent"))
