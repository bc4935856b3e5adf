"""The single-file executable works without the project's venv or environment."""

from __future__ import annotations

import json
import marshal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build(out: Path, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """scripts/build-zipapp.py OUT OPTIONS..."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-zipapp.py"), str(out), *options],
        check=check,
        timeout=60,
        capture_output=True,
        text=True,
    )


def split_file(path: Path) -> tuple[bytes, tuple[bytes, str, dict[str, object]], bytes]:
    """The #! line, the bundle (scripts/build-zipapp.py LAUNCH_CODE) and the zip archive."""
    data = path.read_bytes()
    first, rest = data.split(b"\n", 1)
    length, rest = rest.split(b"\n", 1)
    bundle = marshal.loads(rest[: int(length)])
    return first + b"\n", bundle, rest[int(length) :]


def rewrite(path: Path, first: bytes, bundle: object, archive: bytes) -> None:
    """The file with another bundle; the archive stays where it was (zipimport wants its
    offsets as written), the bundle's length line says where the bundle ends."""
    where = len(path.read_bytes()) - len(archive)
    blob = marshal.dumps(bundle, 4)
    head = first + b"%d\n" % len(blob) + blob
    assert len(head) <= where or not archive
    padding = b"\0" * (where - len(head)) if archive else b""
    path.write_bytes(head + padding + archive)


def answer(path: Path, command: str, conf: dict[str, str], **env: str) -> tuple[int, str]:
    """Run the plugin file as the runtime does: its exit status and its stdout."""
    proc = subprocess.run(
        [str(path)],
        input=json.dumps(conf).encode(),
        env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": command, **env},
        capture_output=True,
        timeout=30,
    )
    return proc.returncode, proc.stdout.decode()


DEL_ENV = {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def test_the_bundle_alone_answers_where_the_interpreter_matches(tmp_path: Path) -> None:
    """The modules compiled into the bundle before the archive are what a matching
    interpreter runs: with the zip archive cut off, VERSION and a DEL (agent down) still
    answer. Each module is then read once, where zipimport read and unmarshalled it twice."""
    out = tmp_path / "cni-bridge-dhcp"
    build(out)
    first, bundle, _archive = split_file(out)
    rewrite(out, first, bundle, b"")
    code, stdout = answer(out, "VERSION", {"cniVersion": "1.0.0"})
    assert code == 0 and json.loads(stdout)["cniVersion"] == "1.0.0"
    conf = {"cniVersion": "1.0.0", "name": "lan", "agentSocket": str(tmp_path / "absent.sock")}
    code, stdout = answer(out, "DEL", conf, **DEL_ENV)
    assert code == 1 and "absent.sock" in json.loads(stdout)["msg"]


def test_another_python_version_runs_the_archive_instead_of_the_bundle(tmp_path: Path) -> None:
    """A node whose python3 is not the build's (another magic number) must not unmarshal the
    bundle's code (other bytecode): it runs the modules from the zip archive. Shown with a
    bundle marked for another version whose code would fail if it ran."""
    out = tmp_path / "cni-bridge-dhcp"
    build(out)
    first, (magic, stage2, modules), archive = split_file(out)
    broken = {name: (pkg, marshal.dumps(compile("raise SystemExit(99)", name, "exec")))
              for name, (pkg, _code) in modules.items()}  # fmt: skip
    rewrite(out, first, (b"\x00\x00\r\n", stage2, broken), archive)
    code, stdout = answer(out, "VERSION", {"cniVersion": "1.0.0"})
    assert code == 0 and json.loads(stdout)["cniVersion"] == "1.0.0"
    rewrite(out, first, (magic, stage2, broken), archive)  # the same bundle, this version's
    assert answer(out, "VERSION", {"cniVersion": "1.0.0"})[0] == 99


def test_zipapp_runs_with_a_scrubbed_environment(tmp_path: Path) -> None:
    out = tmp_path / "cni-bridge-dhcp"
    build(out)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": "VERSION",
        "PYTHONPATH": "/nonexistent",
    }
    proc = subprocess.run(
        [str(out)],
        input=b'{"cniVersion":"1.1.0"}',
        env=env,
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    sock = tmp_path / "absent.sock"
    env = {
        "PATH": "/usr/bin:/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    conf = {
        "cniVersion": "0.4.0",
        "name": "lan",
        "type": "cni-bridge-dhcp",
        "agentSocket": str(sock),
    }
    proc = subprocess.run(
        [str(out)], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err["code"] == 11 and str(sock) in err["msg"] and err["cniVersion"] == "0.4.0"


def test_zipapp_admin_commands_needing_the_agent_say_where_the_full_install_is(
    tmp_path: Path,
) -> None:
    """`uplink restore` and `doctor` from the single-file plugin: a clear message, no traceback."""
    out = tmp_path / "cni-bridge-dhcp"
    build(out)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": "/nonexistent"}
    state = tmp_path / "state"
    for argv in (["uplink", "restore", "--state-dir", str(state)], ["doctor"]):
        proc = subprocess.run(
            [str(out), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
        assert f"cni-bridge-dhcp {argv[0]}" in proc.stderr
        assert "needs the installed package" in proc.stderr
        assert "/opt/cni-bridge-dhcp/venv/bin/cni-bridge-dhcp" in proc.stderr
        assert not state.exists()  # nothing was done


@pytest.mark.parametrize("source", ["bundle", "archive"])
def test_an_interpreter_without_isolation_still_runs_only_the_archive_and_stdlib(
    tmp_path: Path, source: str
) -> None:
    """Built for an interpreter started without -I -S (its cwd and PYTHONPATH are on
    sys.path): modules of the same names as ours and the stdlib's, in the runtime's cwd and
    PYTHONPATH, are never loaded, whether ours come from the bundle or (another Python
    version) from the archive. There the #! code imports our launch module before sys.path
    is trimmed, so only the archive's first place on it keeps them out."""
    out = tmp_path / "cni-bridge-dhcp"
    build(out, "--interpreter", sys.executable)
    if source == "archive":
        first, (_magic, stage2, modules), archive = split_file(out)
        rewrite(out, first, (b"\x00\x00\r\n", stage2, modules), archive)
    hostile = tmp_path / "hostile"
    marker = tmp_path / "loaded"
    trap = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("cni_bridge_dhcp/__init__.py", "cni_bridge_dhcp/launch.py", "socket.py"):
        (hostile / name).parent.mkdir(parents=True, exist_ok=True)
        (hostile / name).write_text(trap)
    (hostile / "struct.py").write_text(trap)
    conf = {"cniVersion": "1.0.0", "name": "lan", "agentSocket": str(tmp_path / "absent.sock")}
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(hostile),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    proc = subprocess.run(
        [str(out)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=30,
        cwd=hostile,
    )
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["code"] == 11  # it got as far as the agent's socket


def test_an_interpreter_line_the_kernel_would_cut_is_refused(tmp_path: Path) -> None:
    """The kernel reads 256 bytes of a #! line and passes a longer one cut short: the code
    would fail on every exec. The build refuses it, naming the reason, and writes nothing."""
    out = tmp_path / "cni-bridge-dhcp"
    long_path = "/opt/" + "p" * 200 + "/bin/python3"
    proc = build(out, "--interpreter", f"{long_path} -IS", check=False)
    assert proc.returncode == 2
    assert "over the kernel's 256" in proc.stderr and long_path in proc.stderr
    assert not out.exists()


def test_interpreter_lines_python_would_misread_are_refused(tmp_path: Path) -> None:
    """The #! line passes "-<flags>c<code>" as one argument: a flag taking a value (-X, -W)
    would swallow the c and the code, a relative path or a word would not run at all."""
    out = tmp_path / "cni-bridge-dhcp"
    for interpreter in ("/usr/bin/python3 -X importtime", "/usr/bin/python3 -IW", "python3"):
        proc = build(out, "--interpreter", interpreter, check=False)
        assert proc.returncode == 2 and interpreter in proc.stderr, proc.stderr
        assert not out.exists()
