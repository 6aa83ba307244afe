-- Catalog: categories, stores, products (with the full-text vector kept by the database).

CREATE TABLE categories (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{2,60}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    icon        text NOT NULL DEFAULT '',
    color       text NOT NULL DEFAULT '#64748b' CHECK (color ~ '^#[0-9a-f]{6}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stores (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug         text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{3,60}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    owner_sub    text NOT NULL CHECK (length(owner_sub) BETWEEN 1 AND 255),
    rating       numeric(3, 2) CHECK (rating BETWEEN 0 AND 5),
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stores_owner_sub_idx ON stores (owner_sub);

CREATE TABLE products (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    store_id       uuid NOT NULL REFERENCES stores (id),
    category_id    integer NOT NULL REFERENCES categories (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description    text NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    price_cents    bigint NOT NULL CHECK (price_cents BETWEEN 1 AND 1000000000),
    currency       char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    stock          integer NOT NULL CHECK (stock >= 0),
    sold_count     integer NOT NULL DEFAULT 0 CHECK (sold_count >= 0),
    view_count     bigint NOT NULL DEFAULT 0 CHECK (view_count >= 0),
    rating         numeric(3, 2) CHECK (rating BETWEEN 0 AND 5),
    -- NULL = pending verification; scored later by score_listings (docs/scoring.md).
    quality_score  real CHECK (quality_score BETWEEN 0 AND 100),
    is_available   boolean NOT NULL DEFAULT true,
    is_approved    boolean NOT NULL DEFAULT true,
    purchase_mode  text NOT NULL DEFAULT 'direct' CHECK (purchase_mode IN ('direct', 'queued')),
    search_vector  tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', description), 'B')
    ) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Listed products only: every public read filters on availability and approval.
CREATE INDEX products_search_idx ON products USING gin (search_vector)
    WHERE is_available AND is_approved;
CREATE INDEX products_category_sold_idx ON products (category_id, sold_count DESC)
    WHERE is_available AND is_approved;
CREATE INDEX products_store_created_idx ON products (store_id, created_at DESC, id DESC);
CREATE INDEX products_sold_idx ON products (sold_count DESC, id)
    WHERE is_available AND is_approved;
CREATE INDEX products_created_idx ON products (created_at DESC, id DESC)
    WHERE is_available AND is_approved;
CREATE INDEX products_price_idx ON products (price_cents, id)
    WHERE is_available AND is_approved;
CREATE INDEX products_pending_score_idx ON products (created_at)
    WHERE quality_score IS NULL;
CREATE INDEX products_top_rated_idx ON products
    (quality_score DESC NULLS LAST, rating DESC NULLS LAST, id)
    WHERE is_available AND is_approved;
