"""The CNI verbs as the agent runs them (orchestration only): main and ipam roles, delegated IPAM, lease following, prevResult, vanished pods."""
