"""CNI types shared by the exec plugin, the agent and the operator tools (stdlib only)."""
