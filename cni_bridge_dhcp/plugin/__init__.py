"""The exec plugin side (stdlib only): exactly what the single-file zipapp ships, with cni/."""
