"""Train and export the listing-quality model (`python -m ml.train_listing_model`).

Listings are synthetic: careful sellers, low-effort ones, spammers and scammers, in eight
categories, with prices around each category's median plus outliers, stock, and store ratings
that are sometimes missing. Each gets a hidden "true quality" in [0, 100] plus noise as its
label; the features are `edgemart.scoring.features.listing_features`, so the model sees exactly
what the scorer will compute. Everything is seeded (`random.Random`, whose streams are stable
across Python versions, and a fixed `random_state` for the single-threaded booster), so the
defaults always rebuild the committed `listing_quality.onnx`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemart.scoring.features import (
    FEATURE_COUNT,
    INPUT_NAME,
    OUTPUT_NAME,
    Listing,
    heuristic_score,
)
from edgemart.scoring.model import feature_batch, run_model

DEFAULT_SEED = 7
DEFAULT_SAMPLES = 20_000
DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "layers/edgemart/edgemart/scoring/listing_quality.onnx"
)
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# IR 8 is what opset 17 shipped with; it keeps the file loadable by older onnxruntime releases.
IR_VERSION = 8
HOLDOUT_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class _Category:
    median_cents: int
    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    details: tuple[str, ...]


_CATEGORIES = (
    _Category(
        12_000,
        ("office chair", "armchair", "dining chair", "bar stool", "rocking chair"),
        ("oak", "walnut", "beech", "steel", "velvet", "leather", "rattan"),
        ("adjustable seat height", "lumbar support", "padded armrests", "360 degree swivel"),
    ),
    _Category(
        25_000,
        ("standing desk", "writing desk", "corner desk", "laptop desk"),
        ("oak", "birch plywood", "steel", "bamboo", "pine"),
        ("cable tray", "two drawers", "dual motor lift", "scratch resistant top"),
    ),
    _Category(
        4_500,
        ("desk lamp", "floor lamp", "pendant light", "reading lamp"),
        ("brass", "aluminium", "linen", "glass", "ceramic"),
        ("dimmable LED", "warm white 2700K", "adjustable arm", "E27 bulb included"),
    ),
    _Category(
        9_000,
        ("area rug", "hallway runner", "kilim", "bath mat"),
        ("wool", "jute", "cotton", "polypropylene"),
        ("hand woven", "non slip backing", "machine washable", "low pile"),
    ),
    _Category(
        3_500,
        ("chef's knife", "cast iron skillet", "dutch oven", "cutting board", "kettle"),
        ("stainless steel", "cast iron", "enamel", "acacia wood", "carbon steel"),
        ("dishwasher safe", "induction ready", "full tang handle", "pre seasoned"),
    ),
    _Category(
        60_000,
        ("road bike", "city bike", "mountain bike", "folding bike"),
        ("aluminium", "carbon", "chromoly steel"),
        ("Shimano 105 groupset", "hydraulic disc brakes", "21 speeds", "tubeless ready wheels"),
    ),
    _Category(
        35_000,
        ("laptop", "tablet", "mechanical keyboard", "monitor", "headphones"),
        ("aluminium", "plastic", "magnesium alloy"),
        ("16 GB RAM", "512 GB SSD", "noise cancelling", "IPS panel", "USB-C charging"),
    ),
    _Category(
        2_500,
        ("hardcover novel", "cookbook", "board game", "jigsaw puzzle"),
        ("paper", "cardboard", "linen bound"),
        ("first edition", "all pieces included", "signed by the author", "for 2 to 6 players"),
    ),
)
_ADJECTIVES = ("handmade", "vintage", "modern", "compact", "classic", "sturdy", "minimalist")
_CONDITIONS = (
    "Brand new in the original box.",
    "Lightly used, no scratches or stains.",
    "Used for one year and kept in a smoke free home.",
    "Some wear on the edges, shown in the photos.",
)
_CARE = (
    "Wipe clean with a damp cloth.",
    "Ships within two working days, carefully packed.",
    "Collection is possible on weekends.",
    "Returns accepted within 14 days.",
)
_SPAM_TITLE_BITS = ("BEST DEAL", "CHEAP", "WOW", "FREE SHIPPING", "HURRY", "LIMITED", "SALE")
_SPAM_SENTENCES = (
    "BEST PRICE GUARANTEED!!!",
    "Cheap cheap cheap, hurry before it is gone!!",
    "Amazing deal, click now!!!",
    "Limited offer, cash only.",
    "Free bonus with every order!!",
)
_CONTACTS = (
    "Message me on whatsapp +1 555 013 4477 for a discount.",
    "Order at www.best-deals-4u.example for half price.",
    "Email cheapgoods@mailbox.example to pay direct.",
    "Contact telegram @fastdeals, no fees.",
)
_LOW_EFFORT = ("good condition", "works", "as pictured", "must go", "ask for details", "")


@dataclass(frozen=True, slots=True)
class _Sample:
    listing: Listing
    quality: float


def _measurement(rng: random.Random) -> str:
    a, b = rng.randint(20, 200), rng.randint(20, 200)
    return rng.choice(
        (
            f"Measures {a} x {b} cm.",
            f"Weighs {rng.randint(1, 30)} kg.",
            f"It is {a} cm wide and {b} cm tall.",
        )
    )


def _sample(rng: random.Random) -> _Sample:
    """One synthetic listing and its hidden quality."""
    category = rng.choice(_CATEGORIES)
    noun, material = rng.choice(category.nouns), rng.choice(category.materials)
    kind = rng.choices(
        ("careful", "ordinary", "low_effort", "spammer", "scammer"), weights=(30, 35, 18, 12, 5)
    )[0]
    effort = {
        "careful": 0.85,
        "ordinary": 0.55,
        "low_effort": 0.15,
        "spammer": 0.3,
        "scammer": 0.35,
    }[kind]
    effort = min(1.0, max(0.0, effort + rng.gauss(0, 0.15)))
    spam = 0.0
    if kind in ("spammer", "scammer"):
        spam = min(1.0, max(0.1, rng.gauss(0.7 if kind == "spammer" else 0.4, 0.2)))

    # Title.
    if kind == "low_effort":
        title = rng.choice((noun, f"{noun} for sale", noun.split()[-1], f"{noun} {material}"))
        title_quality = 0.5
    else:
        title = f"{rng.choice(_ADJECTIVES).title()} {material} {noun}"
        if rng.random() < effort * 0.6:
            title += f", {rng.choice(category.details)}"
        title_quality = 1.0
    if spam:
        bits = rng.sample(_SPAM_TITLE_BITS, k=1 + int(spam * 2.5))
        title = " ".join([*bits, title, "!" * rng.randint(1, 4), "$" * rng.randint(0, 3)])
        if rng.random() < spam:
            title = title.upper()
        title_quality = max(0.0, 0.6 - spam)
    elif rng.random() < 0.05:
        title = title.upper()
        title_quality -= 0.3

    # Description: informative sentences scale with effort, spam and contact lines with spam.
    sentences: list[str] = []
    informative = max(0, round(effort * 7 + rng.gauss(0, 1.2)))
    has_measurement = informative >= 2 and rng.random() < 0.4 + effort * 0.5
    first_detail, second_detail = rng.sample(category.details, k=2)
    first_care, second_care = rng.sample(_CARE, k=2)
    pool = [
        f"{rng.choice(_ADJECTIVES).capitalize()} {noun} made of {material}.",
        f"Features {first_detail}.",
        f"Also {second_detail}.",
        rng.choice(_CONDITIONS),
        first_care,
        second_care,
        f"Perfect for a {rng.choice(('home office', 'small flat', 'gift', 'family'))}.",
    ]
    sentences.extend(pool[: min(informative, len(pool))])
    if has_measurement:
        sentences.insert(1, _measurement(rng))
    if not sentences and kind == "low_effort":
        sentences.append(rng.choice(_LOW_EFFORT))
    spam_lines = round(spam * 3 + rng.random()) if spam else 0
    sentences.extend(rng.choice(_SPAM_SENTENCES) for _ in range(spam_lines))
    has_contact = kind == "scammer" or (spam > 0 and rng.random() < 0.4)
    if has_contact:
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(_CONTACTS))
    description = " ".join(s for s in sentences if s)

    # Price around the category median; scammers undercut, a few sellers overshoot.
    ratio = math.exp(rng.gauss(0, 0.3))
    if kind == "scammer":
        ratio = rng.uniform(0.05, 0.35)
    elif rng.random() < 0.06:
        ratio = rng.choice((rng.uniform(0.1, 0.4), rng.uniform(2.5, 10)))
    price_cents = max(1, round(category.median_cents * ratio / 10) * 10 - 1)
    known_median: int | None = round(category.median_cents * math.exp(rng.gauss(0, 0.05)))
    if rng.random() < 0.1:
        known_median = None

    stock = 0 if rng.random() < 0.1 else rng.randint(1, 60)
    if spam and rng.random() < 0.5:
        stock = 999

    rating: float | None = None
    if rng.random() >= 0.2:
        rating = round(min(5.0, max(1.0, rng.gauss(3.4 + 1.3 * effort - 1.2 * spam, 0.5))), 1)

    # The hidden quality: what a careful human reviewer would give, plus things no feature
    # sees (photos) and reviewer noise.
    quality = 12.0
    quality += 34 * min(1.0, informative / 6) ** 0.7
    quality += 8 if has_measurement else 0
    quality += 12 * title_quality
    quality -= 18 * spam
    quality -= 22 if has_contact else 0
    log_ratio = abs(math.log(ratio))
    quality -= min(20.0, 14 * max(0.0, log_ratio - 0.35))
    quality -= 12 if ratio < 0.3 else 0
    quality += 0 if rating is None else 14 * (rating - 3) / 2
    quality += 6 if stock > 0 else -4
    quality += rng.gauss(0, 4) + rng.gauss(0, 3)
    listing = Listing(
        name=title,
        description=description,
        price_cents=price_cents,
        category_median_price_cents=known_median,
        stock=stock,
        store_rating=rating,
    )
    return _Sample(listing, min(100.0, max(0.0, quality)))


def synthetic_listings(seed: int, samples: int) -> tuple[list[Listing], list[float]]:
    """`samples` synthetic listings and their labels, the same for the same seed."""
    rng = random.Random(seed)
    drawn = [_sample(rng) for _ in range(samples)]
    return [s.listing for s in drawn], [s.quality for s in drawn]


def _spearman(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _metrics(truth: np.ndarray[Any, Any], predicted: np.ndarray[Any, Any]) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {
        "mae": round(float(mean_absolute_error(truth, predicted)), 4),
        "r2": round(float(r2_score(truth, predicted)), 4),
        "spearman": round(_spearman(truth, predicted), 4),
    }


def _export(model: Any) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, FEATURE_COUNT]))],
        final_types=[(OUTPUT_NAME, FloatTensorType([None, 1]))],
        target_opset=TARGET_OPSET,
    )
    outputs = [o.name for o in onx.graph.output]
    if outputs != [OUTPUT_NAME]:
        raise RuntimeError(f"exported model has outputs {outputs}, want [{OUTPUT_NAME!r}]")
    onx.ir_version = IR_VERSION
    # skl2onnx names the graph at random and orders opset imports by set iteration; fixing
    # both makes the file byte-for-byte reproducible.
    onx.graph.name = "edgemart_listing_quality"
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    onx.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in opsets)
    onx.doc_string = "edgemart listing quality, 0..100 (clip at runtime); see docs/scoring.md"
    onnx.checker.check_model(onx)
    return bytes(onx.SerializeToString())


def train(seed: int = DEFAULT_SEED, samples: int = DEFAULT_SAMPLES) -> tuple[bytes, dict[str, Any]]:
    """Generate data, fit, evaluate on a held-out split, export: (ONNX bytes, metrics)."""
    import onnxruntime as ort
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    listings, labels = synthetic_listings(seed, samples)
    # float32 from the start: the ONNX model compares float32 inputs with float32 thresholds.
    x = feature_batch(listings)
    y = np.asarray(labels, dtype=np.float64)
    heuristic = np.asarray([heuristic_score(item) for item in listings], dtype=np.float64)
    x_train, x_test, y_train, y_test, _, h_test = train_test_split(
        x, y, heuristic, test_size=HOLDOUT_FRACTION, random_state=seed
    )

    # Exact (not histogram) boosting: single-threaded, so the same on any number of cores; and
    # skl2onnx 1.20 cannot export scikit-learn 1.9's HistGradientBoostingRegressor (its trees
    # carry boolean node attributes that ONNX rejects).
    model = GradientBoostingRegressor(
        n_estimators=150,
        max_depth=4,
        learning_rate=0.1,
        subsample=0.7,
        max_features=0.5,
        min_samples_leaf=20,
        random_state=seed,
    )
    model.fit(x_train, y_train)
    onnx_bytes = _export(model)
    fitted = time.perf_counter() - started

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_pred = run_model(session, x_test)[:, 0].astype(np.float64)
    sklearn_pred = model.predict(x_test)
    metrics: dict[str, Any] = {
        "seed": seed,
        "samples": samples,
        "holdout": int(len(y_test)),
        "feature_count": FEATURE_COUNT,
        "model": _metrics(y_test, np.clip(onnx_pred, 0, 100)),
        "heuristic": _metrics(y_test, h_test),
        "onnx_vs_sklearn_max_abs_diff": float(np.max(np.abs(onnx_pred - sklearn_pred))),
        "model_bytes": len(onnx_bytes),
        "train_seconds": round(fitted, 2),
    }
    return onnx_bytes, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", action="store_true", help="print held-out metrics as JSON")
    args = parser.parse_args(argv)
    onnx_bytes, metrics = train(args.seed, args.samples)
    args.out.write_bytes(onnx_bytes)
    if args.report:
        json.dump(metrics, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
