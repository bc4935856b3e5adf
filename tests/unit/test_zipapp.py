"""The single-file executable works without the project's venv or environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_an_interpreter_without_isolation_still_runs_only_the_archive_and_stdlib(
    tmp_path: Path,
) -> None:
    """Built for an interpreter started without -I -S (its cwd and PYTHONPATH are on
    sys.path): modules of the same names as ours and the stdlib's, in the runtime's cwd and
    PYTHONPATH, are never loaded. The #! code imports our launch module before sys.path is
    trimmed, so only the archive's first place on it keeps them out."""
    out = tmp_path / "cni-bridge-dhcp"
    build(out, "--interpreter", sys.executable)
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
