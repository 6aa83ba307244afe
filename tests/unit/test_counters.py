"""The in-process buffer in front of the Redis counters: how counts merge into it, bounded."""

from __future__ import annotations

from collections import Counter

from edgemart.counters import merge_pending


def test_merge_adds_to_entries_held_and_new_ones_while_there_is_room() -> None:
    pending = Counter({"lamp": 2})
    assert merge_pending(pending, {"lamp": 3, "rug": 1}, cap=5) == 0
    assert pending == Counter({"lamp": 5, "rug": 1})


def test_merge_drops_only_new_entries_past_the_cap() -> None:
    pending = Counter({"lamp": 1, "rug": 1})
    dropped = merge_pending(pending, {"mat": 4, "lamp": 2, "vase": 1, "rug": 7}, cap=3)
    assert dropped == 1  # "vase": the cap was reached by "mat"; held entries still add up
    assert pending == Counter({"lamp": 3, "rug": 8, "mat": 4})


def test_merge_of_nothing_changes_nothing() -> None:
    pending: Counter[str] = Counter()
    assert merge_pending(pending, {}, cap=0) == 0
    assert merge_pending(pending, {"lamp": 1}, cap=0) == 1
    assert pending == Counter()
