"""Two listings the scoring tests share: a careful seller's and a spammer's."""

from __future__ import annotations

from edgemart.scoring.features import Listing

GOOD = Listing(
    name="Handmade oak dining chair",
    description=(
        "Solid oak dining chair with a woven rattan seat. Measures 45 x 52 cm, seat height "
        "46 cm. Lightly used, no scratches or stains. Wipe clean with a damp cloth. Ships "
        "within two working days, carefully packed. Returns accepted within 14 days."
    ),
    price_cents=11_900,
    category_median_price_cents=12_000,
    stock=12,
    store_rating=4.8,
)
BAD = Listing(
    name="CHEAP CHAIR BEST DEAL!!! $$$",
    description="",
    price_cents=900,
    category_median_price_cents=12_000,
    stock=0,
    store_rating=1.5,
)
