"""The listing-quality feature vector and the heuristic fallback score.

`listing_features` is the model's whole input contract: the scorer and the training script
(`ml/train_listing_model.py`) both call it, so a listing scores the same wherever it is turned
into numbers. It is pure stdlib because it runs on every Lambda cold start, and it hashes
tokens with `zlib.crc32` rather than `hash()`, whose value changes from process to process.

The vector is `len(FEATURE_NAMES)` floats: the named signals below, then `TOKEN_BUCKETS`
hashed word counts of title + description, L2-normalised. docs/scoring.md lists them all.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

INPUT_NAME = "features"
OUTPUT_NAME = "score"
TOKEN_BUCKETS = 40

_DENSE_NAMES = (
    "title_length",
    "title_words",
    "title_upper_ratio",
    "title_exclamations",
    "title_dollars",
    "title_digit_ratio",
    "title_repeated_words",
    "description_length_log",
    "description_present",
    "description_words_log",
    "description_upper_ratio",
    "description_exclamation_density",
    "description_digit_ratio",
    "description_lexical_diversity",
    "description_sentences",
    "description_measurements",
    "title_words_in_description",
    "spam_terms",
    "contact_signals",
    "price_log_ratio",
    "price_ratio_missing",
    "price_nonpositive",
    "stock_log",
    "stock_zero",
    "store_rating",
    "store_rating_missing",
)
FEATURE_NAMES: tuple[str, ...] = _DENSE_NAMES + tuple(
    f"token_bucket_{i:02d}" for i in range(TOKEN_BUCKETS)
)
FEATURE_COUNT: int = len(FEATURE_NAMES)

# Bounds the price ratio so one absurd price cannot dominate a linear model dropped in later.
_MAX_ABS_LOG_PRICE_RATIO = 5.0

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_MEASUREMENT = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?(?:mm|cm|m|km|in|inch|inches|ft|g|kg|lb|lbs|oz|ml|l|w|v|mah|gb|tb)\b",
    re.IGNORECASE,
)
_CONTACT = re.compile(
    r"https?://|www\.|\b[\w.+-]+@[\w-]+\.\w+|\+?\d[\d\s().-]{7,}\d|\b(?:whatsapp|telegram)\b",
    re.IGNORECASE,
)
_SPAM_TERMS = frozenset(
    {
        "free",
        "cheap",
        "cheapest",
        "deal",
        "deals",
        "wow",
        "amazing",
        "hurry",
        "limited",
        "click",
        "guaranteed",
        "cash",
        "discount",
        "sale",
        "urgent",
        "bargain",
        "best",
        "winner",
        "bonus",
        "promo",
    }
)


@dataclass(frozen=True, slots=True)
class Listing:
    """What scoring knows about a listing; `None` means unknown, not zero."""

    name: str
    description: str
    price_cents: int
    category_median_price_cents: int | None
    stock: int
    store_rating: float | None


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _upper_ratio(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return _ratio(sum(c.isupper() for c in letters), len(letters))


def _digit_ratio(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return _ratio(sum(c.isdigit() for c in visible), len(visible))


def _capped(count: int, cap: int) -> float:
    return min(count, cap) / cap


def _log_price_ratio(listing: Listing) -> float | None:
    """ln(price / category median), clipped; None when the median is unknown or unusable."""
    median = listing.category_median_price_cents
    if median is None or median <= 0:
        return None
    if listing.price_cents <= 0:
        return -_MAX_ABS_LOG_PRICE_RATIO
    ratio = math.log(listing.price_cents / median)
    return max(-_MAX_ABS_LOG_PRICE_RATIO, min(_MAX_ABS_LOG_PRICE_RATIO, ratio))


def _rating(listing: Listing) -> float | None:
    rating = listing.store_rating
    if rating is None or not math.isfinite(rating):
        return None
    return max(0.0, min(5.0, rating))


def _token_buckets(tokens: list[str]) -> list[float]:
    buckets = [0.0] * TOKEN_BUCKETS
    for token in tokens:
        buckets[zlib.crc32(token.encode("utf-8")) % TOKEN_BUCKETS] += 1.0
    norm = math.sqrt(sum(v * v for v in buckets))
    return [v / norm for v in buckets] if norm else buckets


def listing_features(listing: Listing) -> list[float]:
    """The model input for one listing: `FEATURE_COUNT` finite floats, same in every process."""
    title = listing.name.strip()
    description = listing.description.strip()
    title_words = _WORD.findall(title.lower())
    description_words = _WORD.findall(description.lower())
    all_words = title_words + description_words
    description_vocabulary = set(description_words)
    title_keywords = [w for w in title_words if len(w) >= 3]
    price_ratio = _log_price_ratio(listing)
    rating = _rating(listing)
    stock = max(listing.stock, 0)

    dense = [
        min(len(title), 200) / 100,
        min(len(title_words), 40) / 10,
        _upper_ratio(title),
        _capped(title.count("!"), 5),
        _capped(title.count("$"), 5),
        _digit_ratio(title),
        1.0 - _ratio(len(set(title_words)), len(title_words)) if title_words else 0.0,
        math.log1p(len(description)) / math.log1p(5000),
        1.0 if description else 0.0,
        math.log1p(len(description_words)) / math.log1p(1000),
        _upper_ratio(description),
        min(_ratio(description.count("!"), len(description_words)), 1.0),
        _digit_ratio(description),
        _ratio(len(description_vocabulary), len(description_words)),
        _capped(len(_SENTENCE_END.findall(description)), 20),
        _capped(len(_MEASUREMENT.findall(description)), 5),
        _ratio(sum(w in description_vocabulary for w in title_keywords), len(title_keywords)),
        _capped(sum(w in _SPAM_TERMS for w in all_words), 5),
        _capped(len(_CONTACT.findall(f"{title}\n{description}")), 3),
        0.0 if price_ratio is None else price_ratio,
        1.0 if price_ratio is None else 0.0,
        1.0 if listing.price_cents <= 0 else 0.0,
        math.log1p(min(stock, 1_000_000)) / math.log1p(1000),
        1.0 if stock == 0 else 0.0,
        0.0 if rating is None else rating / 5,
        1.0 if rating is None else 0.0,
    ]
    return dense + _token_buckets(all_words)


def heuristic_score(listing: Listing) -> float:
    """A model-free quality score in [0, 100], used when the model cannot load or run.

    `100 * (0.30 D + 0.20 T + 0.25 P + 0.15 R + 0.10 S)`, each part in [0, 1]:

    - D, description: `min(1, ln(1 + chars) / ln(1 + 400))`; 400 characters earn full marks.
    - T, title: 1, minus 0.5 if it has fewer than 2 or more than 20 words, minus 0.3 if over
      half its letters are capitals, minus 0.3 if it contains `!` or `$`; floored at 0.
    - P, price: `max(0, 1 - |ln(price / category median)| / ln 4)`, so 1 at the median and 0 at
      4x or 1/4 of it; 0.5 when the median is unknown, 0 for a price <= 0.
    - R, store rating: rating / 5; 0.5 when unknown.
    - S, stock: 1 if in stock, else 0.
    """
    title = listing.name.strip()
    words = len(_WORD.findall(title))

    description = min(1.0, math.log1p(len(listing.description.strip())) / math.log1p(400))

    title_part = 1.0
    if words < 2 or words > 20:
        title_part -= 0.5
    if _upper_ratio(title) > 0.5:
        title_part -= 0.3
    if "!" in title or "$" in title:
        title_part -= 0.3
    title_part = max(0.0, title_part)

    median = listing.category_median_price_cents
    if listing.price_cents <= 0:
        price = 0.0
    elif median is None or median <= 0:
        price = 0.5
    else:
        price = max(0.0, 1 - abs(math.log(listing.price_cents / median)) / math.log(4))

    rating = _rating(listing)
    rating_part = 0.5 if rating is None else rating / 5
    stock = 1.0 if listing.stock > 0 else 0.0

    score = 100 * (
        0.30 * description + 0.20 * title_part + 0.25 * price + 0.15 * rating_part + 0.10 * stock
    )
    return max(0.0, min(100.0, score))
