"""Fixtures of the end-to-end layer."""

from __future__ import annotations

import pytest

from testbed.sandbox import Sandbox


@pytest.fixture
def lan(sandbox: Sandbox) -> Sandbox:
    """The sandbox with dnsmasq serving the LAN and the agent running in the node."""
    sandbox.start_dnsmasq()
    sandbox.start_agent()
    return sandbox
