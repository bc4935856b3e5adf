"""Process-level helpers of the agent: fault hooks, shielded tasks, malloc tuning, per-key locks, fd limits."""
