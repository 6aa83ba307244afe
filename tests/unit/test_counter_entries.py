"""Buffered counter entries name their tenant; `default`'s are spelled as before tenancy, so a
single-tenant install's buffers read exactly as they did."""

import json
import uuid

from edgemart.counters import (
    HistoryEntry,
    SearchCount,
    ViewCount,
    history_entry,
    parse_history,
    parse_search_count,
    parse_view_count,
    search_count_entry,
    view_entry,
)
from edgemart.tenancy import DEFAULT_TENANT_ID

TENANT = uuid.UUID("abcdef00-0000-4000-8000-000000000007")
PRODUCT = str(uuid.UUID(int=1))
CLIENT = "0123456789abcdef0123456789abcdef"


def test_the_default_tenants_entries_keep_their_spelling() -> None:
    assert search_count_entry("Lamp", CLIENT) == json.dumps(["lamp", CLIENT])
    assert history_entry("alice", "Lamp") == json.dumps(["alice", "lamp"])
    assert view_entry(PRODUCT) == PRODUCT
    assert parse_view_count(PRODUCT, 2) == ViewCount(PRODUCT, 2, DEFAULT_TENANT_ID)


def test_another_tenants_entries_carry_it_through_a_flush() -> None:
    assert parse_search_count(search_count_entry("Lamp", CLIENT, TENANT), 1) == SearchCount(
        "lamp", CLIENT, TENANT
    )
    assert parse_history(history_entry("alice", "Lamp", TENANT), 1) == HistoryEntry(
        "alice", "lamp", TENANT
    )
    assert parse_view_count(view_entry(PRODUCT, TENANT), 3) == ViewCount(PRODUCT, 3, TENANT)


def test_an_entry_naming_no_valid_tenant_is_dropped() -> None:
    for name in (
        json.dumps(["lamp", CLIENT, "acme"]),
        json.dumps(["lamp", CLIENT, str(TENANT).upper()]),
        json.dumps(["lamp", CLIENT, str(TENANT), "extra"]),
    ):
        assert isinstance(parse_search_count(name, 1), str), name
    for name in (f"acme:{PRODUCT}", f"{TENANT}:{PRODUCT}:x", f":{PRODUCT}"):
        assert isinstance(parse_view_count(name, 1), str), name
