"""Backend selection and the facade the agent's orchestration calls.

Writes (ensure/add/check/reassert) go to the selected backends. Removals (DEL, GC,
remove_bridge) go to every backend that may hold our rules, because a pod may have been
added under another backend (a host that switched from legacy to nft, or a changed
``firewallBackend``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from ...cni.errors import CNIError, ErrorCode
from ..datapath.sysctl import ensure_sysctl
from . import detect
from .libnft import Nft, NftUnavailable, ensure_process_netns
from .libnft import shared as shared_nft
from .model import FirewallBackend, PodRules

log = logging.getLogger(__name__)


class NoneBackend:
    """``firewallBackend: none``: the plugin leaves the firewall to the admin."""

    name = "none"

    def ensure_bridge(self, bridge: str) -> None:
        return None

    def remove_bridge(self, bridge: str) -> None:
        return None

    def add_pod(self, pod: PodRules) -> None:
        return None

    def del_pod(self, network: str, container_id: str, ifname: str) -> None:
        return None

    def check_pod(self, pod: PodRules) -> list[str]:
        return []

    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        return []

    def pods(self, network: str) -> set[tuple[str, str]]:
        return set()

    def restore_bridge(self, bridge: str) -> list[str]:
        return []

    def restore_pod(self, pod: PodRules) -> list[str]:
        return []


def _nft_or_none() -> Nft | None:
    try:
        return shared_nft()
    except NftUnavailable as exc:
        log.info("nftables backend unavailable: %s", exc)
        return None


def make_backend(name: str) -> FirewallBackend:
    """Instantiate one backend by name (CNIError if it cannot work on this host)."""
    if name == "none":
        return NoneBackend()
    if name == "nftables":
        try:
            nft = shared_nft()
        except NftUnavailable as exc:
            raise CNIError(ErrorCode.FIREWALL_FAILED, f"nftables: {exc}") from exc
        from .nftables import NftablesBackend

        return NftablesBackend(nft)
    if name == "iptables":
        from .legacy import IptablesBackend
        from .nftables import legacy_bridge_place

        maybe_nft = _nft_or_none()
        try:
            return IptablesBackend(lambda: legacy_bridge_place(maybe_nft))
        except Exception as exc:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED, f"iptables: python-iptables unusable: {exc}"
            ) from exc
    raise CNIError(
        ErrorCode.INVALID_CONFIG,
        f"firewallBackend {name!r} is not one of auto, iptables, nftables, none",
    )


def detect_backends(requested: str) -> list[FirewallBackend]:
    """The backends to write to, per ``firewallBackend``; logs the decision and why."""
    if requested not in detect.CHOICES:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"firewallBackend {requested!r} is not one of {', '.join(detect.CHOICES)}",
        )
    ensure_process_netns()
    nft_usage: detect.Usage | None = None
    legacy_usage: detect.Usage | None = None
    if requested == "auto":
        nft = _nft_or_none()
        if nft is not None:
            nft_usage = detect.nft_usage_from_ruleset(nft.list_ruleset())
        legacy_usage = detect.gather_legacy()
        if legacy_usage.in_use:
            why = detect.python_iptables_available()
            if why is not None:
                log.error("legacy iptables is in use but %s", why)
                legacy_usage = None
    decision = detect.decide(requested, legacy_usage, nft_usage)
    log.info(
        "firewall backend(s): %s (requested %s; %s)",
        ", ".join(decision.backends) or "none",
        requested,
        "; ".join(decision.reasons),
    )
    return [make_backend(name) for name in decision.backends] or [NoneBackend()]


class Firewall:
    def __init__(self, requested: str = "auto") -> None:
        self.requested = requested
        self.backends: list[FirewallBackend] = detect_backends(requested)
        self._cleanup: list[FirewallBackend] | None = None

    # Removal reaches every backend that may hold our rules, selected or not.
    def _removers(self) -> list[FirewallBackend]:
        if self._cleanup is None:
            selected = {b.name for b in self.backends}
            extra: list[FirewallBackend] = []
            if "nftables" not in selected and _nft_or_none() is not None:
                extra.append(make_backend("nftables"))
            if "iptables" not in selected and any(detect.legacy_tables().values()):
                try:
                    extra.append(make_backend("iptables"))
                except CNIError as exc:
                    log.warning("cannot clean up legacy iptables rules: %s", exc.msg)
            self._cleanup = extra
        return [b for b in self.backends if b.name != "none"] + self._cleanup

    def ensure_bridge(self, bridge: str) -> None:
        for backend in self.backends:
            backend.ensure_bridge(bridge)

    def remove_bridge(self, bridge: str) -> None:
        for backend in self._removers():
            backend.remove_bridge(bridge)

    def add_pod(self, pod: PodRules) -> None:
        for backend in self.backends:
            backend.add_pod(pod)

    def del_pod(self, network: str, container_id: str, ifname: str) -> None:
        errors: list[CNIError] = []
        for backend in self._removers():
            try:
                backend.del_pod(network, container_id, ifname)
            except CNIError as exc:  # keep going: the other backends' rules must go too
                log.error("%s", exc.msg)
                errors.append(exc)
        if errors:
            raise errors[0]

    def check_pod(self, pod: PodRules) -> list[str]:
        missing: list[str] = []
        for backend in self.backends:
            missing += [f"{backend.name}: {name}" for name in backend.check_pod(pod)]
        return missing

    def pods(self, network: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for backend in self._removers():
            found |= backend.pods(network)
        return found

    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        removed: set[tuple[str, str]] = set()
        for backend in self._removers():
            removed.update(backend.gc(network, keep))
        return sorted(removed)

    def reassert(self, pods: Iterable[PodRules]) -> list[str]:
        """Re-create whatever is missing (e.g. after a firewall reload); name what was."""
        pod_list = list(pods)
        restored: list[str] = []
        for backend in self.backends:
            for bridge in sorted({p.bridge for p in pod_list}):
                try:
                    restored += [f"{backend.name}: {n}" for n in backend.restore_bridge(bridge)]
                except CNIError as exc:
                    log.error("reassert bridge %s: %s", bridge, exc.msg)
            for pod in pod_list:
                try:
                    restored += [f"{backend.name}: {n}" for n in backend.restore_pod(pod)]
                except CNIError as exc:
                    log.error("reassert %s %s: %s", pod.container_id, pod.ifname, exc.msg)
        if restored:
            log.warning(
                "firewall rules were missing and have been restored: %s", "; ".join(restored)
            )
        return restored


def enable_forwarding(ipv6: bool) -> None:
    """Turn on IP forwarding in the current (node) namespace, logging any change."""
    ensure_process_netns()
    knobs = ["net/ipv4/ip_forward"]
    if ipv6:
        knobs.append("net/ipv6/conf/all/forwarding")
    for path in knobs:
        name = path.replace("/", ".")
        try:
            current = ensure_sysctl(path, "1")
        except OSError as exc:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED, f"cannot set {name}=1: {exc.strerror}"
            ) from exc
        if current is None:
            continue
        log.info("set %s=1 (was %s) in namespace %s", name, current, _netns_id())


def _netns_id() -> str:
    try:
        return os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return "?"
