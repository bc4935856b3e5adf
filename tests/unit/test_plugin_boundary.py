"""The plugin's exec path stays standard-library only and works as a real process.

The zipapp is "copy cni/, plugin/ and the entry modules" (scripts/build-zipapp.py). The tests
below build it and run VERSION, an ADD with the agent down and STATUS through it, recording
what each run loaded: nothing of ours outside those folders, nothing outside the stdlib.
The import-linter contracts in pyproject.toml keep the same rule statically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import grimp
import pytest

PLUGIN_MODULES = (
    "cni_bridge_dhcp.cli",
    "cni_bridge_dhcp.plugin.skel",
    "cni_bridge_dhcp.cni.agent_client",
    "cni_bridge_dhcp.plugin.status",
)
# What the zipapp ships (scripts/build-zipapp.py): the exec path may load nothing else of ours.
SHIPPED = ("cni_bridge_dhcp.cni.", "cni_bridge_dhcp.plugin.")
SHIPPED_TOP = {
    "cni_bridge_dhcp",
    "cni_bridge_dhcp.cli",
    "cni_bridge_dhcp.launch",
    "cni_bridge_dhcp.cni",
    "cni_bridge_dhcp.plugin",
}


def test_plugin_path_imports_no_third_party_or_agent_code() -> None:
    code = (
        "import sys\n"
        f"for m in {PLUGIN_MODULES!r}: __import__(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    loaded = set(out.stdout.split())
    forbidden = {
        m
        for m in loaded
        if m.split(".")[0] in {"pyroute2", "pydantic", "iptc", "dhcp_leases", "logging"}
    }
    assert not forbidden
    assert not {m for m in loaded if m.startswith("cni_bridge_dhcp.agent")}
    ours = {m for m in loaded if m.split(".")[0] == "cni_bridge_dhcp"}
    assert {m for m in ours if m not in SHIPPED_TOP and not m.startswith(SHIPPED)} == set()
    stdlib = set(sys.stdlib_module_names)
    third_party = {
        m for m in loaded - ours if m.split(".")[0] not in stdlib and not m.startswith("_")
    }
    # site-packages hooks of the venv (editable-install finders) are the only allowed extras.
    assert all("editable" in m or m.startswith("__editable__") for m in third_party), third_party


def test_version_as_a_process() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "VERSION"}
    proc = subprocess.run(
        [sys.executable, "-m", "cni_bridge_dhcp"],
        input=b'{"cniVersion":"0.4.0"}',
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }
    assert proc.stderr == b""


def test_errors_as_a_process_exit_nonzero_with_json_on_stdout() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD"}
    proc = subprocess.run(
        [sys.executable, "-m", "cni_bridge_dhcp"],
        input=b"{oops",
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == 6


REPO = Path(__file__).resolve().parents[2]
# Runs the archive as `python cbd.pyz` would (runpy puts it first on sys.path and its
# __main__ trims the rest), then writes what the run loaded that the bare interpreter had not:
# module name and file, one per line. stdout/stderr stay the plugin's.
# run_path imports pkgutil (and with it typing) where a real exec's runpy does not: loaded
# before the snapshot, they do not count.
# A plugin exec ends in posix._exit (no teardown, cni/lean_os.py): the record is written
# there too.
RECORDER = """\
import pkgutil, posix, runpy, sys
archive, out = sys.argv[1], sys.argv[2]
sys.argv = [archive, *sys.argv[3:]]
before = set(sys.modules)
def record():
    with open(out, "w") as f:
        for name in sorted(set(sys.modules) - before):
            f.write(f"{name} {getattr(sys.modules[name], '__file__', None) or '-'}\\n")
real_exit = posix._exit
def recorded_exit(code):
    record()
    real_exit(code)
posix._exit = recorded_exit
try:
    runpy.run_path(archive, run_name="__main__")
finally:
    record()
"""
NETCONF = {
    "cniVersion": "1.1.0",
    "name": "lan",
    "type": "cni-bridge-dhcp",
    "bridge": "cni0",
    "uplink": "eth0",
    "ipam": {},
}


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "cni-bridge-dhcp"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/build-zipapp.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def run_recorded(
    zipapp: Path, tmp_path: Path, env: Mapping[str, str], stdin: bytes, *args: str
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, str]]:
    record = tmp_path / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", RECORDER, str(zipapp), str(record), *args],
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        timeout=30,
    )
    loaded = dict(line.split(" ", 1) for line in record.read_text().splitlines())
    return proc, loaded


def assert_only_shipped_stdlib(zipapp: Path, loaded: Mapping[str, str]) -> None:
    ours = {m: f for m, f in loaded.items() if m.split(".")[0] == "cni_bridge_dhcp"}
    assert ours, "the recorder saw none of our modules: it did not run the plugin"
    assert {m for m in ours if m not in SHIPPED_TOP and not m.startswith(SHIPPED)} == set()
    # every one of them came out of the archive, not from the source tree or site-packages
    assert {m: f for m, f in ours.items() if not f.startswith(f"{zipapp}/")} == {}
    stdlib = set(sys.stdlib_module_names)
    others = {m: f for m, f in loaded.items() if m not in ours}
    assert {m: f for m, f in others.items() if m.split(".")[0] not in stdlib} == {}


def test_zipapp_ships_exactly_cni_plugin_and_the_entry_modules(zipapp: Path) -> None:
    pkg = REPO / "cni_bridge_dhcp"
    expected = {"__main__.py"} | {
        f"cni_bridge_dhcp/{p.relative_to(pkg).as_posix()}"
        for p in [*(pkg / "cni").rglob("*.py"), *(pkg / "plugin").rglob("*.py")]
    }
    expected |= {
        f"cni_bridge_dhcp/{n}" for n in ("__init__.py", "__main__.py", "cli.py", "launch.py")
    }
    with zipfile.ZipFile(zipapp) as z:
        sources = {n for n in z.namelist() if n.endswith(".py")}
    assert sources == expected


def test_zipapp_version_loads_only_shipped_stdlib_code(zipapp: Path, tmp_path: Path) -> None:
    proc, loaded = run_recorded(
        zipapp, tmp_path, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}'
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    assert_only_shipped_stdlib(zipapp, loaded)


def test_zipapp_add_with_the_agent_down_loads_only_shipped_stdlib_code(
    zipapp: Path, tmp_path: Path
) -> None:
    conf = {**NETCONF, "agentSocket": str(tmp_path / "no-agent.sock")}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "boundary-1",
        "CNI_NETNS": "/var/run/netns/boundary-none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    proc, loaded = run_recorded(zipapp, tmp_path, env, json.dumps(conf).encode())
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert "no-agent.sock" in error["msg"] + error.get("details", ""), error
    assert_only_shipped_stdlib(zipapp, loaded)


def test_zipapp_status_with_the_agent_down_loads_only_shipped_stdlib_code(
    zipapp: Path, tmp_path: Path
) -> None:
    conf = {**NETCONF, "agentSocket": str(tmp_path / "no-agent.sock")}
    proc, loaded = run_recorded(
        zipapp, tmp_path, {"CNI_COMMAND": "STATUS"}, json.dumps(conf).encode()
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == 50  # STATUS_UNAVAILABLE
    assert_only_shipped_stdlib(zipapp, loaded)
    # the operator's `status` subcommand ships in the zipapp too
    proc, loaded = run_recorded(
        zipapp, tmp_path, {}, b"", "status", "--socket", str(tmp_path / "no-agent.sock")
    )
    assert proc.returncode == 1, proc.stderr
    assert_only_shipped_stdlib(zipapp, loaded)


def test_plugin_and_cni_import_no_third_party_package_even_lazily() -> None:
    """Static: any import in plugin/ or cni/, including in-function ones, names the stdlib."""
    graph = grimp.build_graph("cni_bridge_dhcp", include_external_packages=True, cache_dir=None)
    stdlib = set(sys.stdlib_module_names)
    bad = {
        (m, imported)
        for m in graph.modules
        if m.startswith(("cni_bridge_dhcp.plugin", "cni_bridge_dhcp.cni"))
        for imported in graph.find_modules_directly_imported_by(m)
        if imported.split(".")[0] not in stdlib | {"cni_bridge_dhcp"}
    }
    assert bad == set()


# What an exec must not pay for at import time (issue 16): the json package and re (the
# plugin uses _json's accelerators through cni/jsonfast.py), socket's enum-building wrapper
# (agent_client uses _socket), enum, typing, copy. VERSION needs none of the agent client.
NOT_ON_THE_EXEC_PATH = {"json", "re", "socket", "selectors", "enum", "typing", "copy", "array"}
AGENT_SIDE = {"cni_bridge_dhcp.cni.agent_client", "cni_bridge_dhcp.cni.wire", "_socket"}


def test_zipapp_version_imports_only_what_version_uses(zipapp: Path, tmp_path: Path) -> None:
    proc, loaded = run_recorded(
        zipapp, tmp_path, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}'
    )
    assert proc.returncode == 0, proc.stderr
    assert NOT_ON_THE_EXEC_PATH & set(loaded) == set()
    assert AGENT_SIDE & set(loaded) == set()
    assert "cni_bridge_dhcp.cni.names" not in loaded


@pytest.mark.parametrize("command", ["STATUS", "DEL"])
def test_zipapp_agent_round_trip_imports_no_json_re_socket_enum(
    zipapp: Path, tmp_path: Path, command: str
) -> None:
    conf = {**NETCONF, "agentSocket": str(tmp_path / "no-agent.sock")}
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "boundary-2", "CNI_IFNAME": "eth0"}
    proc, loaded = run_recorded(
        zipapp, tmp_path, {**env, "CNI_PATH": "/opt/cni/bin"}, json.dumps(conf).encode()
    )
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert "no-agent.sock" in error["msg"], error  # it got as far as connecting
    assert NOT_ON_THE_EXEC_PATH & set(loaded) == set()
    assert set(loaded) >= AGENT_SIDE


def _imported_as_installed(
    zipapp: Path, env: Mapping[str, str], stdin: bytes
) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    """Run the file's #! line as the kernel would, with -X importtime added: the answer,
    and every module the exec imported."""
    first = zipapp.read_bytes().split(b"\n", 1)[0].decode()
    path, _, arg = first.removeprefix("#!").partition(" ")
    assert (path, arg[:4]) == ("/usr/bin/python3", "-ISc")
    assert len(first) < 256  # the kernel's #! buffer, newline included
    cmd = [path, "-IS", "-X", "importtime", "-c", arg[4:], str(zipapp)]
    proc = subprocess.run(
        cmd,
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        timeout=30,
    )
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    return proc, imported


# Not imported by a bare `python3 -IS`, and ~0.75 ms of CPU per exec (cni/lean_os.py).
OS_MODULES = {"os", "stat", "posixpath", "_collections_abc"}


def test_zipapp_exec_as_installed_skips_runpy_and_loads_no_json_re_enum(zipapp: Path) -> None:
    """The file as the runtime execs it: its #! line runs `python3 -ISc<code>` on the
    archive (scripts/build-zipapp.py), so runpy (~5 ms) is never imported and no /bin/sh
    runs first."""
    proc, imported = _imported_as_installed(
        zipapp, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}'
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cniVersion"] == "1.0.0"
    assert "cni_bridge_dhcp.plugin.skel" in imported
    forbidden = NOT_ON_THE_EXEC_PATH | AGENT_SIDE | OS_MODULES | {"runpy", "site"}
    assert forbidden & imported == set()


def test_zipapp_exec_as_installed_talks_to_the_agent_without_os(
    zipapp: Path, tmp_path: Path
) -> None:
    """A DEL as installed, with a netns path to pass and the agent down: it gets as far as
    the agent's socket, through cni/lean_os.py, without importing os."""
    netns = tmp_path / "netns"
    netns.write_bytes(b"")  # a regular file: opened and passed, as an nsfs mount would be
    conf = {**NETCONF, "agentSocket": str(tmp_path / "no-agent.sock")}
    env = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "boundary-2",
        "CNI_NETNS": str(netns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    proc, imported = _imported_as_installed(zipapp, env, json.dumps(conf).encode())
    assert proc.returncode == 1
    assert "no-agent.sock" in json.loads(proc.stdout)["msg"]
    assert imported >= AGENT_SIDE
    assert (NOT_ON_THE_EXEC_PATH | OS_MODULES | {"runpy", "site"}) & imported == set()


def test_the_shipped_code_parses_and_runs_on_python_3_9() -> None:
    """README: a node needs python3 >= 3.9 for the plugin executable. No 3.9 interpreter is
    at hand here, so vermin checks the shipped files statically (syntax, stdlib names,
    keyword arguments such as zip(strict=)); annotations are strings at run time."""
    pkg = Path(__file__).resolve().parents[2] / "cni_bridge_dhcp"
    shipped = [
        pkg / "__init__.py",
        pkg / "__main__.py",
        pkg / "cli.py",
        pkg / "launch.py",
        pkg / "cni",
        pkg / "plugin",
    ]
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("vermin")),
            "--no-tips",
            "--eval-annotations=no",
            "-t=3.9-",
            "--violations",
            *map(str, shipped),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zipapp_answer_that_cannot_be_written_is_a_failure(zipapp: Path) -> None:
    """The exec skips the interpreter's teardown (_exit): an answer the runtime never
    got (stdout full) must still end as a failure, never as a silent success."""
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [str(zipapp)],
            input=b'{"cniVersion":"1.0.0"}',
            stdout=full,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "VERSION"},
            timeout=30,
        )
    assert proc.returncode != 0, proc.stderr


def test_zipapp_answer_reaches_a_pipe_in_full(zipapp: Path) -> None:
    """Nothing of the answer is left in a buffer at exit (stdout to a pipe is block-buffered
    and the exec skips the interpreter's teardown): the whole ADD error JSON arrives."""
    conf = {**NETCONF, "agentSocket": "/nonexistent/agent.sock"}
    proc = subprocess.run(
        [str(zipapp)],
        input=json.dumps(conf).encode(),
        capture_output=True,
        env={
            "PATH": os.environ.get("PATH", ""),
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "boundary-2",
            "CNI_NETNS": "/var/run/netns/boundary-none",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
        },
        timeout=30,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == 11
