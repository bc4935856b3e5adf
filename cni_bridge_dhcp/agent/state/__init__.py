"""Crash-safe state on disk: atomic JSON writes, attachment records, the address book."""
