"""The agent's malloc tuning yields to whatever the operator set."""

from __future__ import annotations

from cni_bridge_dhcp.agent.runtime.allocator import tune_malloc


def test_all_settings_apply_by_default() -> None:
    assert tune_malloc({}) == [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_ARENA_MAX",
    ]


def test_a_setting_the_operator_chose_is_left_alone() -> None:
    applied = tune_malloc({"MALLOC_ARENA_MAX": "8"})
    assert "MALLOC_ARENA_MAX" not in applied
    assert "MALLOC_MMAP_THRESHOLD_" in applied


def test_glibc_tunables_switch_all_of_it_off() -> None:
    assert tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}) == []
