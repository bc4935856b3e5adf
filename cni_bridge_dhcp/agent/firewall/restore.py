"""An iptables table read with ``*-save`` and written with ``*-restore --noflush``.

Used where a library cannot do the job cleanly:

- iptables-nft's ``filter`` tables (nftables backend): rules must be in iptables-nft's own
  encoding or ``iptables-nft-save`` (kube-proxy, Docker, the admin) stops working;
- the legacy IPv6 ``nat`` table (iptables backend): python-iptables can load the merged
  ``libxt_NAT.so`` (MASQUERADE) for one address family per process only; the second
  family fails with "can't find target MASQUERADE".

One restore run is one atomic transaction. In ``--noflush`` mode ``:CHAIN`` creates a
chain (or flushes an existing one), so we declare only chains we are creating.

A save prints the whole table, and its cost grows with it (measured for iptables-nft: 2 ms of
CPU for an empty filter table, 15 ms at 1,000 rules, 58 ms at 5,000: fail2ban's ban lists,
ufw, Docker's port rules). ``-S CHAIN`` prints one chain for ~1.6 ms whatever the table
holds, so a table whose chain names we know (iptables-nft's, from the nftables chain list)
and whose last save was big is then read chain by chain: the hook chain, ours and the one
pod chain a step needs. Below that size one save beats those two or three execs. A table
read chain by chain is saved whole again every ``RESAVE_AFTER`` seconds, to notice it shrank.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from time import monotonic

from ...cni.errors import CNIError, ErrorCode
from .libnft import first_line
from .model import CHAIN_PREFIX, FORWARD_CHAIN
from .plan import Op, TableState
from .rules import XRule, iptables_line, parse_iptables_line

INCOMPATIBLE = "incompatible"
BIG_SAVE = 300  # lines of save output from which a table is read chain by chain
RESAVE_AFTER = 300.0  # seconds

# label -> (lines of its last save, monotonic() at it): the size outlives the session
# (each firewall step builds its tables afresh), the agent being one process
_last_save: dict[str, tuple[int, float]] = {}


class RestoreTable:
    def __init__(
        self,
        tool: str,  # e.g. "iptables-nft", "ip6tables-legacy"
        table: str,
        hook: str,
        exists: Callable[[], bool] = lambda: True,
        chains: Iterable[str] | None = None,  # the table's chain names, if known elsewhere
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
        self._names = None if chains is None else set(chains)

    def by_chain(self) -> bool:
        """Whether reads go chain by chain (see the module's docstring)."""
        if self._names is None:
            return False
        last = _last_save.get(self.label)
        return last is not None and last[0] >= BIG_SAVE and monotonic() - last[1] < RESAVE_AFTER

    def _need_tools(self) -> None:
        for tool in (self.save, self.restore):
            if shutil.which(tool) is None:
                raise CNIError(ErrorCode.FIREWALL_FAILED, f"{self.label}: {tool} is not installed")

    def load(self, focus: str | None = None) -> str | None:
        """Read the table now (chain by chain: also ``focus``); returns INCOMPATIBLE if the
        tool cannot parse it."""
        self._loaded = True
        self._state = None
        if not self._exists():
            return None
        self._need_tools()
        if self.by_chain() and self._load_chains(focus):
            return None
        return self._save()

    def _save(self) -> str | None:
        self._state = None
        proc = subprocess.run(
            [self.save, "-t", self.table], capture_output=True, text=True, timeout=30, check=False
        )
        if INCOMPATIBLE in proc.stdout or INCOMPATIBLE in proc.stderr:
            return INCOMPATIBLE
        if proc.returncode != 0:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED, f"{self.save} failed: {first_line(proc.stderr)}"
            )
        _last_save[self.label] = (proc.stdout.count("\n"), monotonic())
        self._state = parse_save(proc.stdout, self.hook, self._saved)
        return None

    def _load_chains(self, focus: str | None) -> bool:
        """The hook chain, ours and ``focus`` (those that exist), one ``-S`` each; False if
        one of them could not be listed (then only a whole save can tell why)."""
        assert self._names is not None
        self._saved.clear()
        state = TableState()
        for name in dict.fromkeys((self.hook, FORWARD_CHAIN, focus)):
            if name is not None and name in self._names:
                text = self._list_chain(name)
                if text is None:
                    return False
                parse_save(text, self.hook, self._saved, state, keep={name})
        self._state = state
        return True

    def _list_chain(self, name: str) -> str | None:
        tool = self.save.removesuffix("-save")
        proc = subprocess.run(
            [tool, "-t", self.table, "-S", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # iptables 1.8.9 says "incompatible" for a chain that is not there too (removed
        # since the chain list was taken): None either way, and the caller saves the table.
        if INCOMPATIBLE in proc.stdout or INCOMPATIBLE in proc.stderr:
            return None
        if proc.returncode != 0:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED,
                f"{tool} -t {self.table} -S {name} failed: {first_line(proc.stderr)}",
            )
        return proc.stdout

    def transaction(self) -> AbstractContextManager[object]:
        return nullcontext()

    def read(self, focus: str | None = None) -> TableState | None:
        if self._loaded:
            self._add_chain(focus)  # load() came before the step knew its pod chain
        else:
            self.load(focus)
        self._loaded = False  # the next read in a later step re-reads
        return self._state

    def _add_chain(self, name: str | None) -> None:
        """``name`` into the loaded state, if the table has it and the state does not (a
        save holds every chain of ours already)."""
        state, names = self._state, self._names or set()
        if state is None or name is None or name not in names or name in state.chains:
            return
        text = self._list_chain(name)
        if text is None:
            self._save()
        else:
            parse_save(text, self.hook, self._saved, state, keep={name})

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
        if self._names is not None:
            for op in ops:
                if op.verb == "new_chain":
                    self._names.add(op.chain)
                elif op.verb == "delete_chain":
                    self._names.discard(op.chain)


def parse_save(
    text: str,
    hook: str,
    saved: dict[tuple[str, XRule], str] | None = None,
    into: TableState | None = None,
    *,
    keep: set[str] | None = None,
) -> TableState:
    """The hook chain and our CBD-* chains from ``*-save`` output of one table, or from
    ``-S CHAIN`` output (``-P``/``-N`` declare the chain), added to ``into``.

    ``saved`` receives each rule's text after ``-A `` (the first of identical rules); it is
    emptied first unless adding to ``into``. ``keep``: only these chains.
    """
    state = into if into is not None else TableState()
    if saved is not None and into is None:
        saved.clear()
    for line in text.splitlines():
        if line.startswith((":", "-P ", "-N ")):
            name = line[1:].split(" ", 1)[0] if line[0] == ":" else line.split(" ", 2)[1]
            if (name == hook or name.startswith(CHAIN_PREFIX)) and (keep is None or name in keep):
                state.chains.setdefault(name, [])
        elif line.startswith("-A ") and line.split(" ", 2)[1] in state.chains:
            # only then: parsing every rule of a big table costs more than saving it
            parsed = parse_iptables_line(line)
            if parsed is not None:
                state.chains[parsed[0]].append(parsed[1])
                if saved is not None:
                    saved.setdefault(parsed, line[len("-A ") :])
    return state
