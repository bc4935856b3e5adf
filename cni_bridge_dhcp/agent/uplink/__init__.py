"""The uplink takeover into the bridge: core (take over, roll back, restore), journal, route plan, watcher."""
