"""Watch the node's links so a re-created uplink is back in its bridge within seconds.

A NIC re-plug or driver reload deletes the uplink and creates a new link under the same
name, which is no port of anything: the node's addresses stay on the bridge, but the
bridge has no way out to the LAN. Nothing else would notice until the next ADD (on a node
without pod churn, never). The watcher listens to netlink link events (RTM_NEWLINK) in the
agent's (node) namespace and hands every change to :func:`uplink.check_port`, which
re-enslaves a re-created uplink and reports one an admin released on purpose (left alone
until the next ADD). A periodic check covers events lost to a socket overrun and changes
made while the agent was down.

A thread of its own: netlink reads block, and a re-enslave waits for the node-wide uplink
lock, which a takeover in an ADD may hold for seconds.
"""

from __future__ import annotations

import contextlib
import logging
import select
import struct
import threading
import time
from pathlib import Path

from ...cni.errors import CNIError
from ..datapath.netlink import LinkEvents, link_events
from ..datapath.rtnl import IFLA_ADDRESS, IFLA_IFNAME, IFLA_PERM_ADDRESS, RTM_NEWLINK, Link
from . import journal as uj
from .reattach import RELEASED, check_port

log = logging.getLogger(__name__)
_NLA = struct.Struct("=HH")  # a netlink attribute header: length, type (host order)

DEBOUNCE = 0.2  # one check for a burst of events (a re-created veth sends several)
GATHER = 0.05  # after a read, let events gather this long before reading again


class UplinkWatcher:
    def __init__(self, state_dir: Path, *, interval: float = 5.0) -> None:
        self.state_dir = state_dir
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released: int | None = None  # ifindex already reported as released
        self._last_error: str | None = None
        # (uplink name, uplink MAC, bridge name) of the takeover, from the journal at the
        # last check; None = not known yet, every link event counts.
        self._interest: tuple[str, str, str] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ loop

    def _run(self) -> None:
        ipr: LinkEvents | None = None
        next_check = 0.0
        while not self._stop.is_set():
            if ipr is None:
                ipr = self._subscribe()
                next_check = 0.0  # whatever happened while not subscribed
            now = time.monotonic()
            wait = min(max(0.0, next_check - now), 0.5)
            if ipr is not None:
                try:
                    # poll(), not select(): the agent may raise its open-file limit, and
                    # select() fails on descriptors numbered 1024 and above.
                    poller = select.poll()
                    poller.register(ipr.fileno(), select.POLLIN)
                    ready = poller.poll(wait * 1000)
                    if ready and self._link_changed(ipr):
                        next_check = min(next_check, time.monotonic() + DEBOUNCE)
                    if ready:
                        # A burst of pod ADDs/DELs is read in a few batches, not one
                        # wake-up (and GIL hand-over) per event.
                        self._stop.wait(GATHER)
                except (OSError, ValueError) as exc:  # overrun (ENOBUFS) or a closed socket
                    log.warning("uplink watcher: netlink events lost (%s); resubscribing", exc)
                    with contextlib.suppress(Exception):
                        ipr.close()
                    ipr = None
                    continue
            else:
                self._stop.wait(wait)
            if time.monotonic() >= next_check:
                self._check()
                next_check = time.monotonic() + self.interval
        if ipr is not None:
            with contextlib.suppress(Exception):
                ipr.close()

    def _subscribe(self) -> LinkEvents | None:
        try:
            ipr = link_events()
        except Exception as exc:
            log.warning("uplink watcher: cannot subscribe to link events (%s); polling", exc)
            return None
        return ipr

    def _link_changed(self, ipr: LinkEvents) -> bool:
        links = ipr.read(self._needles())
        return any(self.relevant(link) for link in links if link.event == RTM_NEWLINK)

    def _needles(self) -> tuple[bytes, ...]:
        """What an event about a possible uplink holds, attribute header included: its name
        (IFLA_IFNAME, NUL-ended) or its MAC as IFLA_ADDRESS or IFLA_PERM_ADDRESS. The bare
        MAC is in every bridge port's event too (the bridge's id, IFLA_BRPORT_BRIDGE_ID,
        holds the bridge's MAC, which is the uplink's): searched for alone, it had 91 of 181
        events of 10 veths added to the bridge and deleted decoded, against 1 (the bridge's
        own) now. Nothing known yet: every event is decoded."""
        if self._interest is None:
            return ()
        uplink, mac, _ = self._interest
        name = uplink.encode() + b"\0"
        raw = bytes.fromhex(mac.replace(":", ""))
        return (
            _NLA.pack(_NLA.size + len(name), IFLA_IFNAME) + name,
            _NLA.pack(_NLA.size + len(raw), IFLA_ADDRESS) + raw,
            _NLA.pack(_NLA.size + len(raw), IFLA_PERM_ADDRESS) + raw,
        )

    def relevant(self, link: Link) -> bool:
        """Whether a new/changed link can be the uplink: check_port looks for it by name or,
        for a NIC back under another name, by MAC. A pod's veth (random name and MAC) comes
        and goes with every ADD and DEL and never is; nor is the bridge (which carries the
        uplink's MAC). The periodic check stays the backstop for anything missed."""
        interest = self._interest
        if interest is None:
            return True
        uplink, mac, bridge = interest
        if link.name == bridge:
            return False
        return link.name == uplink or mac in (link.address, link.perm_address)

    def _learn_interest(self) -> None:
        try:
            journal = uj.load(self.state_dir)
        except Exception:
            journal = None
        if journal is None or journal.phase != uj.DONE or journal.snapshot is None:
            self._interest = None
        else:
            self._interest = (journal.uplink, journal.snapshot.mac.lower(), journal.bridge)

    def _check(self) -> None:
        self._learn_interest()
        try:
            found = check_port(self.state_dir)
        except CNIError as exc:
            self._error(f"{exc.msg}: {exc.details}" if exc.details else exc.msg)
            return
        except Exception as exc:
            self._error(f"check failed: {type(exc).__name__}: {exc}", trace=True)
            return
        self._last_error = None
        if found is None:
            self._released = None
        elif found.kind == RELEASED:
            if self._released != found.ifindex:
                log.warning("%s", found.message)
                self._released = found.ifindex
        else:
            self._released = None
            log.warning("%s", found.message)

    def _error(self, message: str, *, trace: bool = False) -> None:
        # Retried every interval: said once until it changes.
        if message != self._last_error:
            log.error("uplink watcher: %s", message, exc_info=trace)
            self._last_error = message
