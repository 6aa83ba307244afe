"""A deterministic, realistic demo catalog, bulk-loaded with COPY.

The same `seed` and `as_of` always produce the same rows: categories, stores owned by
`seller-1`…`seller-N`, products with varied names, descriptions, prices, stock and sales, and
funded wallets for `buyer-1`…`buyer-M`, in one tenant (`default` unless named). Rows are
streamed to PostgreSQL in large COPY chunks while they are generated, so a million products
load in minutes.

The catalog is the `default` tenant's (docs/decisions/0040): the load runs with that tenant
set, so it is the default's under row-level security whoever runs it, and `--replace` refuses
a database with other tenants (its TRUNCATE would empty their catalogs too).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from edgemart.errors import EdgemartError
from edgemart.tenancy import DEFAULT_TENANT_ID

BUYER_BALANCE_CENTS = 1_000_000
_COPY_CHUNK_ROWS = 20_000

# Called with (products written, products asked for) after each COPY chunk.
ProgressCallback = Callable[[int, int], None]


class CatalogNotEmptyError(EdgemartError):
    """Seeding was asked for on a database that already holds a catalog."""


@dataclass(frozen=True, slots=True)
class CategorySpec:
    slug: str
    name: str
    icon: str
    color: str
    nouns: tuple[str, ...]
    price_range_cents: tuple[int, int]


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "chairs",
        "Chairs",
        "chair",
        "#b45309",
        ("office chair", "armchair", "dining chair", "stool", "rocking chair"),
        (3_000, 90_000),
    ),
    CategorySpec(
        "desks",
        "Desks",
        "desk",
        "#92400e",
        ("standing desk", "writing desk", "corner desk", "laptop desk"),
        (8_000, 150_000),
    ),
    CategorySpec(
        "lamps",
        "Lamps",
        "lamp",
        "#ca8a04",
        ("desk lamp", "floor lamp", "pendant light", "reading lamp"),
        (1_500, 40_000),
    ),
    CategorySpec(
        "rugs",
        "Rugs",
        "rug",
        "#9f1239",
        ("area rug", "runner", "kilim", "bath mat"),
        (2_000, 120_000),
    ),
    CategorySpec(
        "kitchen",
        "Kitchen",
        "pan",
        "#0f766e",
        ("chef's knife", "skillet", "dutch oven", "cutting board", "kettle"),
        (1_000, 45_000),
    ),
    CategorySpec(
        "coffee",
        "Coffee",
        "cup",
        "#78350f",
        ("pour-over set", "espresso cup", "burr grinder", "coffee beans", "moka pot"),
        (800, 60_000),
    ),
    CategorySpec(
        "audio",
        "Audio",
        "headphones",
        "#1d4ed8",
        ("headphones", "bookshelf speaker", "turntable", "earbuds", "amplifier"),
        (2_500, 200_000),
    ),
    CategorySpec(
        "cameras",
        "Cameras",
        "camera",
        "#334155",
        ("film camera", "lens", "tripod", "camera strap", "light meter"),
        (1_500, 250_000),
    ),
    CategorySpec(
        "books",
        "Books",
        "book",
        "#7c3aed",
        ("novel", "cookbook", "field guide", "poetry collection", "art book"),
        (500, 8_000),
    ),
    CategorySpec(
        "stationery",
        "Stationery",
        "pen",
        "#0369a1",
        ("fountain pen", "notebook", "planner", "ink set", "sketchbook"),
        (300, 20_000),
    ),
    CategorySpec(
        "bags",
        "Bags",
        "bag",
        "#854d0e",
        ("backpack", "tote", "messenger bag", "duffel", "wallet"),
        (1_500, 70_000),
    ),
    CategorySpec(
        "shoes",
        "Shoes",
        "shoe",
        "#57534e",
        ("sneakers", "boots", "loafers", "sandals", "running shoes"),
        (3_000, 50_000),
    ),
    CategorySpec(
        "jackets",
        "Jackets",
        "jacket",
        "#166534",
        ("rain jacket", "denim jacket", "down parka", "wool coat", "fleece"),
        (4_000, 90_000),
    ),
    CategorySpec(
        "jewelry",
        "Jewelry",
        "ring",
        "#be185d",
        ("ring", "necklace", "earrings", "bracelet", "pendant"),
        (1_000, 300_000),
    ),
    CategorySpec(
        "watches",
        "Watches",
        "watch",
        "#0f172a",
        ("field watch", "dive watch", "chronograph", "dress watch"),
        (5_000, 500_000),
    ),
    CategorySpec(
        "plants",
        "Plants",
        "leaf",
        "#15803d",
        ("monstera", "fiddle leaf fig", "succulent set", "planter", "bonsai"),
        (800, 25_000),
    ),
    CategorySpec(
        "garden",
        "Garden",
        "shovel",
        "#4d7c0f",
        ("pruning shears", "garden hose", "raised bed", "watering can"),
        (1_000, 40_000),
    ),
    CategorySpec(
        "toys",
        "Toys",
        "blocks",
        "#ea580c",
        ("building blocks", "puzzle", "plush bear", "wooden train", "kite"),
        (500, 15_000),
    ),
    CategorySpec(
        "games",
        "Board games",
        "dice",
        "#c2410c",
        ("board game", "card game", "chess set", "dice set"),
        (1_000, 12_000),
    ),
    CategorySpec(
        "bikes",
        "Bikes",
        "bike",
        "#0e7490",
        ("city bike", "bike helmet", "bike light", "saddle", "pannier"),
        (2_000, 250_000),
    ),
    CategorySpec(
        "outdoor",
        "Outdoor",
        "tent",
        "#3f6212",
        ("tent", "sleeping bag", "camp stove", "headlamp", "water filter"),
        (1_500, 80_000),
    ),
    CategorySpec(
        "fitness",
        "Fitness",
        "dumbbell",
        "#b91c1c",
        ("yoga mat", "kettlebell", "resistance bands", "jump rope", "foam roller"),
        (800, 40_000),
    ),
    CategorySpec(
        "beauty",
        "Beauty",
        "bottle",
        "#db2777",
        ("face serum", "soap bar", "hair oil", "lip balm", "body lotion"),
        (400, 9_000),
    ),
    CategorySpec(
        "pets",
        "Pets",
        "paw",
        "#a16207",
        ("dog bed", "cat tree", "leash", "pet bowl", "chew toy"),
        (600, 30_000),
    ),
)

ADJECTIVES = (
    "Classic",
    "Modern",
    "Vintage",
    "Compact",
    "Handmade",
    "Minimal",
    "Rustic",
    "Nordic",
    "Deluxe",
    "Everyday",
    "Heritage",
    "Urban",
    "Coastal",
    "Studio",
    "Portable",
    "Premium",
    "Heavy-duty",
    "Lightweight",
    "Artisan",
    "Essential",
    "Signature",
    "Weathered",
    "Bold",
    "Quiet",
    "Soft",
    "Sturdy",
    "Slim",
    "Grand",
    "Little",
    "Pro",
)
MATERIALS = (
    "oak",
    "walnut",
    "linen",
    "wool",
    "leather",
    "ceramic",
    "brass",
    "steel",
    "bamboo",
    "cotton",
    "canvas",
    "glass",
    "copper",
    "cork",
    "marble",
    "recycled",
    "organic",
    "maple",
    "teak",
    "aluminium",
)
COLORS = (
    "black",
    "white",
    "charcoal",
    "sand",
    "olive",
    "navy",
    "rust",
    "cream",
    "forest green",
    "terracotta",
    "slate",
    "mustard",
)
STORE_WORDS = (
    "north",
    "river",
    "cedar",
    "maple",
    "harbor",
    "ember",
    "willow",
    "stone",
    "copper",
    "meadow",
    "summit",
    "lantern",
    "orchard",
    "tide",
    "fable",
    "atlas",
    "juniper",
    "birch",
    "aurora",
    "pine",
    "canyon",
    "delta",
    "echo",
    "fern",
)
STORE_KINDS = ("Goods", "Supply", "Workshop", "Trading Co", "Studio", "Market", "House", "Co")
DESCRIPTION_OPENERS = (
    "Made in small batches from {material}, this {noun} is built to last.",
    "A {adjective} {noun} in {color}, designed for everyday use.",
    "Our best-selling {noun}, now in {color} {material}.",
    "Thoughtfully designed {noun} with a {material} finish.",
    "The {noun} we wished existed: {adjective}, honest and easy to care for.",
)
DESCRIPTION_DETAILS = (
    "Ships in plastic-free packaging.",
    "Backed by a two-year warranty.",
    "Each piece is inspected by hand before it leaves the workshop.",
    "Pairs well with the rest of the collection.",
    "Easy to clean with a damp cloth.",
    "Sourced from certified suppliers.",
    "Free returns within 30 days.",
    "Available while stock lasts.",
)


@dataclass(frozen=True, slots=True)
class SeedReport:
    categories: int
    stores: int
    products: int
    buyers: int
    seconds: float


def seed_catalog(
    conninfo: str,
    *,
    products: int,
    seed: int = 1,
    stores: int | None = None,
    buyers: int = 100,
    as_of: datetime | None = None,
    replace: bool = False,
    progress: ProgressCallback | None = None,
    tenant: UUID = DEFAULT_TENANT_ID,
) -> SeedReport:
    """Load the demo catalog into `tenant` (`default` unless named); refuses a non-empty
    catalog unless `replace` (which empties every tenant's: only for `default`)."""
    if replace and tenant != DEFAULT_TENANT_ID:
        raise ValueError("replace empties every tenant's catalog: only for the default tenant")
    started = time.perf_counter()
    store_count = stores if stores is not None else max(50, products // 100)
    as_of = as_of or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(seed)
    with psycopg.connect(conninfo) as conn:
        # For the whole session: every row below takes the tenant as its tenant_id's default,
        # and row-level security admits it for a role it applies to.
        conn.execute("SELECT set_config('edgemart.tenant_id', %s, false)", [str(tenant)])
        if replace:
            _refuse_other_tenants(conn, tenant)
            conn.execute(
                "TRUNCATE categories, stores, products, wallets, orders, payouts "
                "RESTART IDENTITY CASCADE"
            )
        elif catalog_is_present(conn, tenant):
            raise CatalogNotEmptyError("the catalog is not empty; pass --replace to reload it")
        category_ids = _categories(conn, tenant)
        store_rows = _copy_stores(conn, rng, store_count, as_of)
        _copy_products(conn, rng, products, category_ids, store_rows, as_of, progress)
        _copy_wallets(conn, buyers, as_of)
        conn.commit()
        conn.execute("ANALYZE categories, stores, products, wallets")
        conn.execute("SELECT refresh_home_lists(%s)", [tenant])
        # A home page rendered from the previous catalog must not outlive it: without a
        # snapshot the home function renders live until refresh_views stores a new one.
        conn.execute("DELETE FROM home_snapshot WHERE tenant_id = %s", [tenant])
    return SeedReport(len(CATEGORIES), store_count, products, buyers, time.perf_counter() - started)


def catalog_is_present(
    conn: psycopg.Connection[tuple[object, ...]], tenant: UUID = DEFAULT_TENANT_ID
) -> bool:
    """Whether the tenant has stores or products. Sets the connection's tenant for the session
    first: an owner that is not a superuser is held to row-level security too."""
    conn.execute("SELECT set_config('edgemart.tenant_id', %s, false)", [str(tenant)])
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM stores WHERE tenant_id = %(tenant)s) "
        "OR EXISTS (SELECT 1 FROM products WHERE tenant_id = %(tenant)s)",
        {"tenant": tenant},
    ).fetchone()
    return bool(row and row[0])


def _refuse_other_tenants(conn: psycopg.Connection[tuple[object, ...]], tenant: UUID) -> None:
    """A TRUNCATE empties the tables for every tenant: refuse when there is another. Asked of
    `tenants`, which row-level security does not filter: an owner that is not a superuser
    would see no other tenant's rows in the catalog tables, and could still TRUNCATE them."""
    others = "SELECT EXISTS (SELECT 1 FROM tenants WHERE id <> %s)"
    row = conn.execute(others, [tenant]).fetchone()
    if row and row[0]:
        raise CatalogNotEmptyError(
            "this database has tenants besides the default one; --replace would erase their "
            "catalogs too"
        )


def _categories(conn: psycopg.Connection[tuple[object, ...]], tenant: UUID) -> list[int]:
    """The ids of CATEGORIES in the tenant, in their order: those it has by slug (a new
    tenant starts with a copy of the default tenant's), the others added."""
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO categories (slug, name, icon, color) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(spec.slug, spec.name, spec.icon, spec.color) for spec in CATEGORIES],
        )
    rows = conn.execute("SELECT slug, id FROM categories WHERE tenant_id = %s", [tenant]).fetchall()
    ids = {str(slug): int(str(category_id)) for slug, category_id in rows}
    return [ids[spec.slug] for spec in CATEGORIES]


def _copy_stores(
    conn: psycopg.Connection[tuple[object, ...]],
    rng: random.Random,
    count: int,
    as_of: datetime,
) -> list[tuple[str, list[int]]]:
    """Stores as (id, indexes into CATEGORIES): each specialises in one or two categories."""
    stores: list[tuple[str, list[int]]] = []
    columns = "id, slug, name, description, owner_sub, rating, created_at"
    with conn.cursor().copy(f"COPY stores ({columns}) FROM STDIN") as copy:
        for number in range(1, count + 1):
            store_id = _uuid(rng)
            first, second = rng.sample(STORE_WORDS, 2)
            kind = rng.choice(STORE_KINDS)
            name = f"{first.title()} {second.title()} {kind}"
            created = as_of - timedelta(days=rng.uniform(30, 1500))
            specialities = rng.sample(range(len(CATEGORIES)), rng.choice((1, 1, 2)))
            sells = " and ".join(CATEGORIES[index].name.lower() for index in specialities)
            description = f"{name}: independent shop for {sells}."
            rating = f"{rng.uniform(3.2, 5.0):.2f}"
            slug = f"{first}-{second}-{number}"
            copy.write_row((store_id, slug, name, description, f"seller-{number}", rating, created))
            stores.append((store_id, specialities))
    return stores


def _copy_products(
    conn: psycopg.Connection[tuple[object, ...]],
    rng: random.Random,
    count: int,
    category_ids: list[int],
    stores: list[tuple[str, list[int]]],
    as_of: datetime,
    progress: ProgressCallback | None,
) -> None:
    columns = (
        "id, store_id, category_id, name, description, price_cents, stock, sold_count, "
        "view_count, rating, quality_score, is_available, created_at"
    )
    with conn.cursor().copy(f"COPY products ({columns}) FROM STDIN") as copy:
        written = 0
        for chunk in _product_lines(rng, count, category_ids, stores, as_of):
            copy.write(chunk)
            written = min(count, written + _COPY_CHUNK_ROWS)
            if progress is not None:
                progress(written, count)


def _product_lines(
    rng: random.Random,
    count: int,
    category_ids: list[int],
    stores: list[tuple[str, list[int]]],
    as_of: datetime,
) -> Iterator[str]:
    """COPY text-format rows, in chunks. Every generated string is free of tabs, newlines
    and backslashes, so no escaping is needed."""
    as_of_epoch = as_of.timestamp()
    lines: list[str] = []
    for _ in range(count):
        store_id, specialities = stores[rng.randrange(len(stores))]
        category_index = rng.choice(specialities)
        spec = CATEGORIES[category_index]
        noun = rng.choice(spec.nouns)
        adjective = rng.choice(ADJECTIVES)
        material = rng.choice(MATERIALS)
        color = rng.choice(COLORS)
        name = f"{adjective} {material} {noun}"
        if rng.random() < 0.4:
            name += f" in {color}"
        opener = rng.choice(DESCRIPTION_OPENERS).format(
            noun=noun, adjective=adjective.lower(), material=material, color=color
        )
        description = " ".join((opener, *rng.sample(DESCRIPTION_DETAILS, rng.randint(1, 3))))
        low, high = spec.price_range_cents
        price = int(min(high, max(low, low * rng.lognormvariate(0.9, 0.7)))) // 100 * 100 + 99
        stock = 0 if rng.random() < 0.05 else int(rng.paretovariate(1.2) * 5)
        sold = int(rng.paretovariate(1.1) * 3) - 3
        views = sold * rng.randint(5, 40) + rng.randint(0, 500)
        rating = "\\N" if rng.random() < 0.1 else f"{min(5.0, max(1.0, rng.gauss(4.1, 0.6))):.2f}"
        score = "\\N" if rng.random() < 0.03 else f"{rng.uniform(20, 100):.1f}"
        available = "f" if rng.random() < 0.02 else "t"
        created = datetime.fromtimestamp(
            as_of_epoch - rng.random() ** 2 * 365 * 86400, UTC
        ).isoformat()
        lines.append(
            "\t".join(
                (
                    _uuid(rng),
                    store_id,
                    str(category_ids[category_index]),
                    name,
                    description,
                    str(price),
                    str(min(stock, 1_000_000)),
                    str(max(sold, 0)),
                    str(views),
                    rating,
                    score,
                    available,
                    created,
                )
            )
        )
        if len(lines) >= _COPY_CHUNK_ROWS:
            yield "\n".join(lines) + "\n"
            lines.clear()
    if lines:
        yield "\n".join(lines) + "\n"


def _copy_wallets(
    conn: psycopg.Connection[tuple[object, ...]], buyers: int, as_of: datetime
) -> None:
    statement = "COPY wallets (user_sub, balance_cents, created_at) FROM STDIN"
    with conn.cursor().copy(statement) as copy:
        for number in range(1, buyers + 1):
            copy.write_row((f"buyer-{number}", BUYER_BALANCE_CENTS, as_of))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
