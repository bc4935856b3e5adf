"""The agent process: asyncio unix-socket server, socket activation, signals, routing.

One request per connection (see ``cni_bridge_dhcp.cni.wire``). Each connection is read
with a deadline so a stalled client never blocks others; oversize or malformed messages
are answered with an error and never reach the orchestration.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import fcntl
import logging
import logging.handlers
import os
import resource
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from ..cni.defaults import DEFAULT_SOCKET, DEFAULT_STATE_DIR
from ..cni.errors import CNIError, ErrorCode
from ..cni.wire import HEADER, error_response, frame, frame_length, ok_response, parse_request
from .runtime import faults, fdlimits
from .service import Agent
from .state.statefile import StateDirError, check_state_dir

log = logging.getLogger("cni_bridge_dhcp.agent")

READ_TIMEOUT = 10.0
SD_LISTEN_FDS_START = 3
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 1.0
MAX_DRAIN = 65536
SHED_LOG_INTERVAL = 10.0


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cni-bridge-dhcp daemon", description="Run the agent.")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="unix socket path")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="leases and journals")
    p.add_argument("--log-file", default=None, help="also log to this file")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--pidfile", default=None)
    p.add_argument(
        "--firewall-interval",
        type=float,
        default=60.0,
        help="seconds between re-assertions of firewall rules (0 disables)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        help="requests served at once; more are answered with code 11 (try again). "
        "Default: derived from the open-file limit "
        f"({fdlimits.FDS_PER_CONNECTION} descriptors each, {fdlimits.RESERVED_FDS} kept for "
        f"the agent, between {fdlimits.MIN_CONNECTIONS} and {fdlimits.MAX_CONNECTIONS})",
    )
    p.add_argument(
        "--cleanup-interval",
        type=float,
        default=60.0,
        help="seconds between sweeps that tear down ADDs left half-made (pending records "
        "whose undo failed); 0 disables (the start-up cleanup still runs)",
    )
    return p.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


class _ShedLog:
    """One warning per interval while the agent sheds load, with the count since the last."""

    def __init__(self) -> None:
        self._last = 0.0
        self._suppressed = 0

    def note(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last < SHED_LOG_INTERVAL:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        log.warning("shedding load: %s%s", what, more)
        self._last, self._suppressed = now, 0


def setup_logging(level: str, log_file: str | None) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level.upper())
    for h in list(root.handlers):
        root.removeHandler(h)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    root.addHandler(err)
    # pyroute2 logs every netlink message at debug level: far too much for an operator log.
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.WatchedFileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def activated_socket(env: dict[str, str] | os._Environ[str]) -> socket.socket | None:
    """The listening socket passed by systemd (LISTEN_FDS), if any."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX:
        raise SystemExit("LISTEN_FDS socket is not a unix socket")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sock


def ensure_socket_free(path: str) -> None:
    """Refuse a live socket or a non-socket file at ``path``; remove a dead agent's socket."""
    sock_path = Path(path)
    if sock_path.exists() or sock_path.is_symlink():
        if not stat.S_ISSOCK(sock_path.lstat().st_mode):
            raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            sock_path.unlink()  # stale socket of a dead agent
        else:
            raise SystemExit(f"another agent is already listening on {path}")
        finally:
            probe.close()


def bind_socket(path: str) -> socket.socket:
    ensure_socket_free(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


async def _wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _read_request(
    loop: asyncio.AbstractEventLoop, conn: socket.socket
) -> tuple[bytes, list[int]]:
    """Read one framed message and any SCM_RIGHTS fds that came with it."""
    buf = bytearray()
    fds: list[int] = []
    need = HEADER.size
    have_header = False
    while len(buf) < need:
        await _wait_readable(loop, conn)
        try:
            data, ancdata, _flags, _addr = conn.recvmsg(
                min(65536, need - len(buf)), socket.CMSG_SPACE(4 * 4)
            )
        except (BlockingIOError, InterruptedError):
            continue
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
                fds.extend(arr)
        if not data:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("client closed the connection")
        buf.extend(data)
        if not have_header and len(buf) >= HEADER.size:
            have_header = True
            try:
                need = HEADER.size + frame_length(bytes(buf[: HEADER.size]))
            except CNIError:
                for fd in fds:
                    os.close(fd)
                raise
    return bytes(buf[HEADER.size :]), fds


class Server:
    def __init__(
        self, agent: Agent, sock: socket.socket, *, max_connections: int | None = None
    ) -> None:
        self.agent = agent
        self.sock = sock
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_connections = max_connections or fdlimits.default_max_connections()
        self._shed = _ShedLog()

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        accept_task: asyncio.Task[tuple[socket.socket, Any]] | None = None
        stop_task = asyncio.create_task(stop.wait())
        backoff = ACCEPT_BACKOFF_MIN
        try:
            while not stop.is_set():
                accept_task = asyncio.create_task(loop.sock_accept(self.sock))
                done, _ = await asyncio.wait(
                    {accept_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
                )
                if accept_task not in done:
                    accept_task.cancel()
                    break
                try:
                    conn, _ = accept_task.result()
                except OSError as exc:
                    if exc.errno not in fdlimits.TRANSIENT_ACCEPT_ERRNOS:
                        raise
                    # Out of descriptors (or memory): the client waits in the backlog
                    # (its own timeout bounds that) while running operations free some.
                    self._shed.note(f"accept() failed: {exc.strerror or exc}; backing off")
                    await asyncio.wait({stop_task}, timeout=backoff)
                    backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                    continue
                backoff = ACCEPT_BACKOFF_MIN
                if len(self.tasks) >= self.max_connections:
                    self._refuse(conn)
                    continue
                task = asyncio.create_task(self._connection(conn))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            stop_task.cancel()
            if accept_task is not None and not accept_task.done():
                accept_task.cancel()
        if self.tasks:
            # Let in-flight operations finish so no pod is left half-made.
            await asyncio.wait(self.tasks, timeout=60)

    def _refuse(self, conn: socket.socket) -> None:
        """Answer "try again" (11) at once, without reading more than is already there."""
        self._shed.note(
            f"{len(self.tasks)} connections in progress (limit --max-connections "
            f"{self.max_connections}): answering 11"
        )
        err = CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"cni-bridge-dhcp agent is busy: {len(self.tasks)} requests in progress "
            f"(limit {self.max_connections}); try again",
            "raise the agent's --max-connections (and its open-file limit) if this persists",
        )
        try:
            conn.setblocking(False)
            # Take in what the client already sent (SCM_RIGHTS fds are dropped by the kernel
            # without a control buffer), so the close does not reset the connection first.
            with contextlib.suppress(OSError):
                conn.recv(MAX_DRAIN)
            with contextlib.suppress(OSError):
                conn.send(frame(error_response(err)))
        finally:
            conn.close()

    async def _connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        fds: list[int] = []
        try:
            try:
                body, fds = await asyncio.wait_for(_read_request(loop, conn), READ_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "dropping a client that sent no complete request in %.0f s", READ_TIMEOUT
                )
                return
            except ConnectionError:
                return
            except CNIError as err:
                await loop.sock_sendall(conn, frame(error_response(err)))
                return
            response = await self.handle(body, fds)
            fds = []  # handed over to handle()
            with contextlib.suppress(OSError):
                await loop.sock_sendall(conn, frame(response))
        except Exception:
            log.exception("connection handler failed")
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    async def handle(self, body: bytes, fds: list[int]) -> dict[str, Any]:
        netns_fd: int | None = None
        try:
            req = parse_request(body)
            if req.get("netnsFd") and fds:
                netns_fd = fds.pop(0)
            for extra in fds:
                os.close(extra)
            fds.clear()
            # From here the agent owns the fd and closes it, whatever happens.
            owned, netns_fd = netns_fd, None
            result = await self.agent.handle(req, owned)
            return ok_response(result)
        except Exception as exc:
            if fdlimits.is_fd_exhaustion(exc):
                # Transient, whatever step ran out (opening the netns, a state file, a
                # netlink socket): the runtime retries; what was made is undone or cleaned up.
                log.warning("request failed: the agent is out of file descriptors: %s", exc)
                return error_response(
                    CNIError(
                        ErrorCode.TRY_AGAIN_LATER,
                        f"cni-bridge-dhcp agent is out of file descriptors ({exc}); try again",
                        "raise the agent's open-file limit (LimitNOFILE=) or lower "
                        "--max-connections",
                    )
                )
            if isinstance(exc, CNIError):
                return error_response(exc)
            log.exception("internal error handling a request")
            return error_response(
                CNIError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            )
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
            for extra in fds:
                os.close(extra)


async def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        check_state_dir(state_dir)
    except StateDirError as exc:
        raise SystemExit(str(exc)) from None
    # One agent per state dir: two would both re-adopt leases and tear down "interrupted" ADDs.
    lock_fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another agent is running with state dir {state_dir}") from None
    activated = activated_socket(os.environ)
    if activated is None:
        ensure_socket_free(args.socket)
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    agent = Agent(
        state_dir,
        firewall_interval=args.firewall_interval,
        cleanup_interval=args.cleanup_interval,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock: socket.socket | None = activated
    try:
        await agent.start()
        # Bound only once recovery is done: an existing socket means the agent is ready.
        if sock is None:
            sock = bind_socket(args.socket)
        log.info(
            "agent ready on %s (state %s, pid %d%s)",
            args.socket if activated is None else "systemd socket",
            state_dir,
            os.getpid(),
            ", socket-activated" if activated else "",
        )
        server = Server(agent, sock, max_connections=args.max_connections)
        log.info(
            "serving at most %d connections at once (open-file limit %d)",
            server.max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        await server.serve(stop)
    finally:
        log.info("agent stopping: leases stay bound, pods keep running")
        await agent.close()
        if sock is not None:
            sock.close()
        if activated is None and sock is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.socket)
        if args.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.pidfile)
    return 0


def daemon_main(argv: list[str]) -> int:
    args = _parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    faults.announce()
    fdlimits.raise_nofile()
    from .runtime.allocator import tune_malloc

    log.debug("malloc settings applied: %s", ", ".join(tune_malloc()) or "none")
    try:
        return asyncio.run(run(args))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            log.error("%s", exc.code)
            return 1
        raise
