"""The listing feature vector and the heuristic fallback score (pure stdlib, no model)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from edgemart.scoring.features import (
    FEATURE_COUNT,
    FEATURE_NAMES,
    TOKEN_BUCKETS,
    Listing,
    heuristic_score,
    listing_features,
)
from tests.unit.sample_listings import BAD, GOOD

listings = st.builds(
    Listing,
    name=st.text(max_size=300),
    description=st.text(max_size=2000),
    price_cents=st.integers(-(10**12), 10**12),
    category_median_price_cents=st.none() | st.integers(-(10**12), 10**12),
    stock=st.integers(-(10**9), 10**9),
    store_rating=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)


def named(listing: Listing) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, listing_features(listing), strict=True))


def test_feature_names_match_the_count() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == FEATURE_COUNT
    assert FEATURE_COUNT <= 96
    assert len(listing_features(GOOD)) == FEATURE_COUNT


@settings(max_examples=300, deadline=None)
@given(listing=listings)
def test_any_listing_gives_count_finite_floats(listing: Listing) -> None:
    features = listing_features(listing)
    assert len(features) == FEATURE_COUNT
    assert all(type(v) is float and math.isfinite(v) for v in features)
    assert features == listing_features(listing)


@settings(max_examples=300, deadline=None)
@given(listing=listings)
def test_heuristic_is_within_0_100(listing: Listing) -> None:
    score = heuristic_score(listing)
    assert 0.0 <= score <= 100.0


def test_features_are_the_same_in_another_process() -> None:
    # Different hash seeds: a feature that used builtin hash() would differ between these.
    script = (
        "import json; from edgemart.scoring.features import Listing, listing_features; "
        f"print(json.dumps(listing_features(Listing(**json.loads({json.dumps(asdict(GOOD))!r})))))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == listing_features(GOOD)


def test_spammy_title_signals() -> None:
    good, bad = named(GOOD), named(BAD)
    assert good["title_upper_ratio"] < 0.2 < 0.9 < bad["title_upper_ratio"]
    assert good["title_exclamations"] == good["title_dollars"] == 0.0
    assert bad["title_exclamations"] > 0 and bad["title_dollars"] > 0
    assert bad["spam_terms"] > good["spam_terms"] == 0.0
    assert good["description_present"] == 1.0 and bad["description_present"] == 0.0
    assert good["description_measurements"] > 0
    assert bad["stock_zero"] == 1.0 and good["stock_zero"] == 0.0


def test_contact_details_are_flagged() -> None:
    listing = replace(GOOD, description="Pay direct: whatsapp +1 555 013 4477 or www.example.test")
    assert named(listing)["contact_signals"] > named(GOOD)["contact_signals"] == 0.0


def test_price_ratio_and_missing_median() -> None:
    double = named(Listing("Oak chair", "", 24_000, 12_000, 1, 4.0))
    assert double["price_log_ratio"] == math.log(2)
    assert double["price_ratio_missing"] == 0.0
    for median in (None, 0):
        unknown = named(Listing("Oak chair", "", 24_000, median, 1, 4.0))
        assert unknown["price_log_ratio"] == 0.0
        assert unknown["price_ratio_missing"] == 1.0
    absurd = named(Listing("Oak chair", "", 10**12, 100, 1, 4.0))
    assert absurd["price_log_ratio"] == 5.0


def test_missing_store_rating() -> None:
    assert named(GOOD)["store_rating"] == 4.8 / 5
    assert named(GOOD)["store_rating_missing"] == 0.0
    for rating in (None, math.nan):
        features = named(Listing("Oak chair", "", 1_000, 1_000, 1, rating))
        assert features["store_rating"] == 0.0
        assert features["store_rating_missing"] == 1.0


def test_token_buckets_are_unit_length_or_zero() -> None:
    buckets = listing_features(GOOD)[-TOKEN_BUCKETS:]
    assert math.isclose(math.sqrt(sum(v * v for v in buckets)), 1.0)
    assert (
        listing_features(Listing("", "", 1, None, 0, None))[-TOKEN_BUCKETS:]
        == [0.0] * TOKEN_BUCKETS
    )


def test_heuristic_ranks_good_above_bad() -> None:
    assert heuristic_score(GOOD) > 80 > 30 > heuristic_score(BAD)


def test_heuristic_formula() -> None:
    description = "x" * 400
    perfect = Listing("Oak dining chair", description, 12_000, 12_000, 5, 5.0)
    assert math.isclose(heuristic_score(perfect), 100.0)
    # Unknown median and rating count half: 30 + 20 + 12.5 + 7.5 + 10.
    unknown = Listing("Oak dining chair", description, 12_000, None, 5, None)
    assert math.isclose(heuristic_score(unknown), 80.0)
    # 4x the median, out of stock, shouting with "!": 30 + 20 * 0.4 + 0 + 15 + 0.
    shouting = Listing("OAK DINING CHAIR!", description, 48_000, 12_000, 0, 5.0)
    assert math.isclose(heuristic_score(shouting), 53.0)
