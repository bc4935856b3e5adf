"""`cni-bridge-dhcp doctor`: facts.py gathers (I/O), checks.py judges (pure)."""
