"""Operator tools (uplink restore, doctor): need the full install; the agent never imports them."""
