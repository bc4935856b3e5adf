"""An iptables table read with ``*-save`` and written with ``*-restore --noflush``.

Used where a library cannot do the job cleanly:

- iptables-nft's ``filter`` tables (nftables backend): rules must be in iptables-nft's own
  encoding or ``iptables-nft-save`` (kube-proxy, Docker, the admin) stops working;
- the legacy IPv6 ``nat`` table (iptables backend): python-iptables can load the merged
  ``libxt_NAT.so`` (MASQUERADE) for one address family per process only; the second
  family fails with "can't find target MASQUERADE".

One restore run is one atomic transaction. In ``--noflush`` mode ``:CHAIN`` creates a
chain (or flushes an existing one), so we declare only chains we are creating.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from ...cni.errors import CNIError, ErrorCode
from .libnft import first_line
from .model import CHAIN_PREFIX
from .plan import Op, TableState
from .rules import XRule, iptables_line, parse_iptables_line

INCOMPATIBLE = "incompatible"


class RestoreTable:
    def __init__(
        self,
        tool: str,  # e.g. "iptables-nft", "ip6tables-legacy"
        table: str,
        hook: str,
        exists: Callable[[], bool] = lambda: True,
    ) -> None:
        self.save = f"{tool}-save"
        self.restore = f"{tool}-restore"
        self.table = table
        self.hook = hook
        self.label = f"{tool} {table}"
        self._exists = exists
        self._state: TableState | None = None
        self._loaded = False
        # (chain, rule) -> the rule's text as *-save printed it: a delete names the rule
        # exactly as the tool knows it, whatever our parsing of it missed.
        self._saved: dict[tuple[str, XRule], str] = {}

    def _need_tools(self) -> None:
        for tool in (self.save, self.restore):
            if shutil.which(tool) is None:
                raise CNIError(ErrorCode.FIREWALL_FAILED, f"{self.label}: {tool} is not installed")

    def load(self) -> str | None:
        """Read the table now; returns INCOMPATIBLE if the tool cannot parse it."""
        self._loaded = True
        self._state = None
        if not self._exists():
            return None
        self._need_tools()
        proc = subprocess.run(
            [self.save, "-t", self.table], capture_output=True, text=True, timeout=30, check=False
        )
        if INCOMPATIBLE in proc.stdout or INCOMPATIBLE in proc.stderr:
            return INCOMPATIBLE
        if proc.returncode != 0:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED, f"{self.save} failed: {first_line(proc.stderr)}"
            )
        self._state = parse_save(proc.stdout, self.hook, self._saved)
        return None

    def transaction(self) -> AbstractContextManager[object]:
        return nullcontext()

    def read(self, focus: str | None = None) -> TableState | None:
        if not self._loaded:
            self.load()
        self._loaded = False  # the next read in a later step re-reads
        return self._state

    def apply(self, ops: Sequence[Op]) -> None:
        self._need_tools()
        lines = [f"*{self.table}"]
        for op in ops:
            if op.verb == "new_chain":
                lines.append(f":{op.chain} - [0:0]")
            elif op.verb == "flush":
                lines.append(f"-F {op.chain}")
            elif op.verb == "delete_chain":
                lines.append(f"-X {op.chain}")
            elif op.verb == "delete" and op.rule is not None and (op.chain, op.rule) in self._saved:
                lines.append("-D " + self._saved[op.chain, op.rule])
            elif op.verb in ("insert", "append", "delete") and op.rule is not None:
                flag = {"insert": "-I", "append": "-A", "delete": "-D"}[op.verb]
                lines.append(iptables_line(op.chain, op.rule, flag))
        lines.append("COMMIT")
        proc = subprocess.run(
            [self.restore, "--noflush"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED,
                f"{self.restore}: {first_line(proc.stderr) or 'failed'}",
                "\n".join(lines),
            )


def parse_save(
    text: str, hook: str, saved: dict[tuple[str, XRule], str] | None = None
) -> TableState:
    """The hook chain and our CBD-* chains from ``*-save`` output of one table.

    ``saved`` receives each rule's text after ``-A `` (the first of identical rules).
    """
    state = TableState()
    if saved is not None:
        saved.clear()
    for line in text.splitlines():
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if name == hook or name.startswith(CHAIN_PREFIX):
                state.chains.setdefault(name, [])
        else:
            parsed = parse_iptables_line(line)
            if parsed is not None and parsed[0] in state.chains:
                state.chains[parsed[0]].append(parsed[1])
                if saved is not None:
                    saved.setdefault(parsed, line[len("-A ") :])
    return state
