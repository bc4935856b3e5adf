"""The verbs every backend shares, written once over ``Place``s.

A backend only says how to open a *session*: take its locks, read what it needs, and
yield the places it writes to. Each verb then reads every place, plans, and applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager

from ...cni.errors import CNIError, ErrorCode
from .model import PodRules, pod_chain
from .plan import (
    Desired,
    Op,
    Place,
    TableState,
    bridge_desired,
    plan_check,
    plan_ensure,
    plan_remove_bridge,
    plan_remove_pod,
    pod_desired,
    pods_in,
)

log = logging.getLogger(__name__)


def describe(op: Op) -> str:
    """``append CBD-FORWARD "cni-bridge-dhcp: bridge br0"`` for error details."""
    text = f"{op.verb} {op.chain}".strip()
    if op.rule is not None:
        text += f" {op.rule.comment or op.rule.target!r}"
    return text


class PlacesBackend:
    name = "base"
    # (place label, chain or bridge) whose rules, once written, could not be found again:
    # writing them again would only add duplicates, so we stop and report instead.
    _unfindable: set[tuple[str, str]]

    def _session(self) -> AbstractContextManager[list[Place]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _fail(self, place: Place, what: str, exc: Exception, ops: Sequence[Op] = ()) -> CNIError:
        planned = "; ".join(describe(op) for op in ops)
        details = f"planned: {planned}" if planned else ""
        if isinstance(exc, CNIError):
            details = "\n".join(d for d in (details, exc.details) if d)
            return CNIError(exc.code, f"{self.name}: {place.label}: {what}: {exc.msg}", details)
        return CNIError(
            ErrorCode.FIREWALL_FAILED,
            f"{self.name}: {place.label}: {what}: {exc}",
            details or type(exc).__name__,
        )

    def _read(self, place: Place, focus: str | None = None) -> TableState | None:
        try:
            return place.access.read(focus)
        except Exception as exc:
            raise self._fail(place, "cannot read", exc) from exc

    def _apply(self, place: Place, ops: list[Op], what: str) -> None:
        if not ops:
            return
        try:
            place.access.apply(ops)
        except Exception as exc:
            raise self._fail(place, what, exc, ops) from exc
        log.debug("%s: %s: %s (%d edits)", self.name, place.label, what, len(ops))

    def _pod_want(self, place: Place, pod: PodRules) -> Desired | None:
        want = pod_desired(place, pod)
        if want is not None and place.kind == "filter":
            # The pod also needs its bridge's shared accept; keep it with the pod so a
            # single add/check covers everything the pod's traffic depends on.
            shared = bridge_desired(place, pod.bridge)
            if shared is not None:
                want.entries = shared.entries + want.entries
        return want

    def _missing_places(self, places: list[Place], pod: PodRules) -> None:
        """Refuse a pod whose required feature has no place in this backend."""
        for wanted, feature in ((pod.macspoofchk, "macspoofchk"), (pod.isolated, "portIsolation")):
            if wanted and not any(p.kind == "bridge" for p in places):
                raise CNIError(
                    ErrorCode.FIREWALL_FAILED,
                    f"{self.name}: {feature} needs the nftables bridge family (libnftables.so.1)",
                )
        if pod.ip_masq:
            for version in sorted({ip.version for ip in pod.ips}):
                if not any(p.kind == "nat" and version in p.families for p in places):
                    raise CNIError(
                        ErrorCode.FIREWALL_FAILED,
                        f"{self.name}: ipMasq has no IPv{version} nat table in this backend",
                    )

    def _ensure(
        self, place: Place, want: Desired, state: TableState | None, key: str, what: str
    ) -> list[str]:
        """Apply what ``want`` lacks, then read it back: what we wrote must be found again.

        Otherwise every later re-assertion would append it once more (unbounded growth), so
        the key is remembered and nothing is written for it again in this process.
        """
        ops, names = plan_ensure(place, want, state)
        if not ops:
            return names
        memo = self.__dict__.setdefault("_unfindable", set())
        if (place.label, key) in memo:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED,
                f"{self.name}: {place.label}: {what}: rules written earlier could not be read "
                "back; not writing them again",
                "; ".join(names),
            )
        self._apply(place, ops, what)
        reload = getattr(place.access, "reload", None)
        if callable(reload):
            reload()
        again = plan_check(place, want, self._read(place, key))
        if again:
            memo.add((place.label, key))
            log.error(
                "%s: %s: %s: written rules cannot be found again (%s); they will not be re-added",
                self.name,
                place.label,
                what,
                "; ".join(again),
            )
            raise CNIError(
                ErrorCode.FIREWALL_FAILED,
                f"{self.name}: {place.label}: {what}: written rules cannot be read back",
                "; ".join(again),
            )
        return names

    # ------------------------------------------------------------------ verbs

    def restore_bridge(self, bridge: str) -> list[str]:
        made: list[str] = []
        with self._session() as places:
            for place in places:
                want = bridge_desired(place, bridge)
                if want is None:
                    continue
                with place.access.transaction():
                    state = self._read(place)
                    if state is None:  # filter tables are never created by us
                        continue
                    made += self._ensure(
                        place, want, state, f"bridge {bridge}", f"add bridge {bridge} rules"
                    )
        return made

    def ensure_bridge(self, bridge: str) -> None:
        self.restore_bridge(bridge)

    def remove_bridge(self, bridge: str) -> None:
        with self._session() as places:
            for place in places:
                with place.access.transaction():
                    state = self._read(place)
                    ops = plan_remove_bridge(place, bridge, state)
                    self._apply(place, ops, f"remove bridge {bridge} rules")

    def restore_pod(self, pod: PodRules) -> list[str]:
        made: list[str] = []
        with self._session() as places:
            self._missing_places(places, pod)
            for place in places:
                want = self._pod_want(place, pod)
                if want is None:
                    continue
                with place.access.transaction():
                    state = self._read(place, pod.chain)
                    if state is None and not place.create:
                        continue
                    made += self._ensure(
                        place,
                        want,
                        state,
                        pod.chain,
                        f"add rules of {pod.container_id} {pod.ifname}",
                    )
        return made

    def add_pod(self, pod: PodRules) -> None:
        self.restore_pod(pod)

    def del_pod(self, network: str, container_id: str, ifname: str) -> None:
        chain = pod_chain(network, container_id, ifname)
        with self._session() as places:
            for place in places:
                with place.access.transaction():
                    state = self._read(place, chain)
                    ops = plan_remove_pod(place, chain, state)
                    self._apply(place, ops, f"remove rules of {container_id} {ifname}")

    def check_pod(self, pod: PodRules) -> list[str]:
        missing: list[str] = []
        with self._session() as places:
            try:
                self._missing_places(places, pod)
            except CNIError as exc:
                missing.append(exc.msg)
            for place in places:
                want = self._pod_want(place, pod)
                if want is None:
                    continue
                with place.access.transaction():
                    state = self._read(place, pod.chain)
                if state is None and not place.create:
                    continue
                missing += plan_check(place, want, state)
        return missing

    def pods(self, network: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        with self._session() as places:
            for place in places:
                with place.access.transaction():
                    state = self._read(place)
                found |= pods_in(place, network, state)
        return found

    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        stale = sorted(self.pods(network) - keep)
        for cid, ifname in stale:
            self.del_pod(network, cid, ifname)
            log.info("%s: removed stale rules of %s %s %s", self.name, network, cid, ifname)
        return stale
