"""Fact gathering for `doctor`, one module per topic; the only part that does I/O
(besides ``..probe``). Each ``*_check`` gathers and hands plain data to ``..checks``."""
