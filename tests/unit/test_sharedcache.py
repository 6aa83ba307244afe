"""The shared cache's pure parts: the entry encoding, key names, and the fill's decisions."""

from __future__ import annotations

import pytest

from edgemart.cache import Rendered
from edgemart.changes import SEARCH_KEY_PREFIX, key_marks, prefix_mark
from edgemart.sharedcache import (
    MAX_RAW_KEY,
    CorruptEntryError,
    KeyNames,
    Lookup,
    decode,
    encode,
    next_step,
    poll_delays,
)

BIG = {"results": [{"id": index, "name": "oak lamp " * 4} for index in range(40)]}


def test_an_entry_survives_encoding_with_its_gzip_body_and_tags() -> None:
    rendered = Rendered.of(BIG, now=1_733_400_000.123456, tags=["product:1", "store:é", "x"])
    assert rendered.gzip_body is not None  # big enough to be compressed
    assert decode(encode(rendered)) == rendered


@pytest.mark.parametrize("payload", [None, {}, "ünïcode", [1, 2, 3]])
def test_small_pages_without_gzip_or_tags_survive_too(payload: object) -> None:
    rendered = Rendered.of(payload, now=0.0)
    assert rendered.gzip_body is None and rendered.tags == ()
    assert decode(encode(rendered)) == rendered


def test_the_encoding_is_compact() -> None:
    """Beside the bodies, only the ETag, the tags and a few bytes of framing."""
    rendered = Rendered.of(BIG, now=1.0, tags=["product:1"])
    assert rendered.gzip_body is not None
    framing = len(encode(rendered)) - len(rendered.body) - len(rendered.gzip_body)
    assert framing == 18 + len(rendered.etag) + 4 + 2 + 2 + len("product:1")


def test_every_truncation_and_trailing_bytes_are_refused() -> None:
    data = encode(Rendered.of(BIG, now=5.0, tags=["product:1", "product:2"]))
    for length in range(len(data)):
        with pytest.raises(CorruptEntryError):
            decode(data[:length])
    with pytest.raises(CorruptEntryError):
        decode(data + b"\0")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"XX" + data[2:],  # not our magic
        lambda data: data[:2] + b"\x02" + data[3:],  # another version
        lambda data: data[:3] + b"\x04" + data[4:],  # an unknown flag
    ],
)
def test_foreign_bytes_are_refused(damage: object) -> None:
    data = encode(Rendered.of({"a": 1}, now=0.0))
    with pytest.raises(CorruptEntryError):
        decode(damage(data))  # type: ignore[operator]


def test_key_names_keep_namespaces_and_kinds_apart() -> None:
    ours, theirs = KeyNames("edgemart:cache"), KeyNames("staging:cache")
    assert ours.entry("product:1") == "edgemart:cache:e1:=product:1"
    assert ours.lock("product:1") == "edgemart:cache:lock:=product:1"
    assert ours.filed("product:1") == "edgemart:cache:t:=product:1"
    assert ours.dropped("product:1") == "edgemart:cache:d:=product:1"
    assert ours.channel == "edgemart:cache:invalidations"
    assert theirs.entry("product:1") != ours.entry("product:1")
    names = {ours.entry("k"), ours.lock("k"), ours.filed("k"), ours.dropped("k"), ours.channel}
    assert len(names) == 5


def test_long_keys_are_named_by_their_hash() -> None:
    names = KeyNames("ns")
    long_key = SEARCH_KEY_PREFIX + "q=" + "x" * MAX_RAW_KEY
    other = long_key + "y"
    assert len(names.entry(long_key)) == len("ns:e1:#") + 64
    assert names.entry(long_key) != names.entry(other)
    assert names.entry("x" * MAX_RAW_KEY).endswith("=" + "x" * MAX_RAW_KEY)  # at the limit: raw


def test_a_page_is_filed_under_its_tags_and_its_key_s_prefixes() -> None:
    assert key_marks("search?q=lamp", ["product:1", "product:1", "product:2"]) == [
        "product:1",
        "product:2",
        prefix_mark(SEARCH_KEY_PREFIX),
    ]
    assert key_marks("popular_searches", []) == ["prefix:popular_searches"]
    assert key_marks("product:1", ["product:1"]) == ["product:1"]


PAGE = Rendered.of({"a": 1}, now=0.0)


@pytest.mark.parametrize(
    ("found", "has_last_good", "step"),
    [
        (Lookup(PAGE), False, "use_entry"),
        (Lookup(PAGE), True, "use_entry"),
        (Lookup(None, 1, "token"), False, "render"),
        (Lookup(None, 1, "token"), True, "render"),  # the lock is ours: render, not stale
        (Lookup(None, 1, None), True, "serve_last_good"),
        (Lookup(None, 1, None), False, "wait"),
    ],
)
def test_what_a_process_does_after_a_lookup(found: Lookup, has_last_good: bool, step: str) -> None:
    assert next_step(found, has_last_good) == step


def test_waiting_polls_faster_first_and_never_past_the_bound() -> None:
    delays = poll_delays(1.0)
    assert delays[:4] == [0.01, 0.02, 0.04, 0.08]
    assert max(delays) == 0.1
    assert 0.9 < sum(delays) <= 1.0
    assert poll_delays(0.0) == []
    assert sum(poll_delays(0.05)) <= 0.05


def test_a_tenant_s_page_is_filed_under_its_tenant_s_prefixes() -> None:
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME

    key = scoped(ACME, "search?q=lamp")
    tag = scoped(ACME, "product:1")
    assert key_marks(key, [tag]) == [tag, prefix_mark(scoped(ACME, SEARCH_KEY_PREFIX))]
    # A key that merely contains a prefix after another tenant's scope is not filed under
    # the default tenant's.
    assert prefix_mark(SEARCH_KEY_PREFIX) not in key_marks(key, [])
