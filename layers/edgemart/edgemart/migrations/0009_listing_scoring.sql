-- Listing scoring (DESIGN.md §7): the state score_listings keeps on each pending listing, the
-- scorer's last run for /health, and ranking that places pending listings in the middle.

-- score_attempts counts claims: it is raised when a run claims the listing, before scoring, so
-- a listing that crashes every run still runs out of attempts and gets the fallback score.
-- score_lease_until keeps a claimed listing away from other runs while one scores it; a run
-- that dies leaves a lease that simply expires. score_source says how the score was made:
-- 'model', 'heuristic' (the model was unavailable) or 'fallback' (scoring this listing failed
-- on every attempt: flagged for review).
ALTER TABLE products
    ADD COLUMN score_attempts     smallint NOT NULL DEFAULT 0 CHECK (score_attempts >= 0),
    ADD COLUMN score_lease_until  timestamptz,
    ADD COLUMN score_source       text CHECK (score_source IN ('model', 'heuristic', 'fallback')),
    ADD COLUMN scored_at          timestamptz;

-- The scorer's state after its last run: one row, id 1, read by /health.
CREATE TABLE scoring_status (
    id               smallint PRIMARY KEY CHECK (id = 1),
    scorer           text NOT NULL CHECK (scorer IN ('model', 'heuristic')),
    model_path       text NOT NULL,
    degraded_reason  text,
    last_run_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- A pending listing ranks as an average one (50 of 100): below well-scored listings, above
-- poor ones; never first, never hidden. Search tie-breaks use the same rule.
CREATE FUNCTION listing_rank_score(quality_score real) RETURNS real
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(quality_score, 50);

DROP INDEX products_top_rated_idx;
CREATE INDEX products_top_rated_idx ON products
    (listing_rank_score(quality_score) DESC, rating DESC NULLS LAST, id)
    WHERE is_available AND is_approved;

-- Both views are rebuilt: categories gain the median listed price (a scoring feature: price
-- against its category), and top rated ranks by listing_rank_score.
DROP MATERIALIZED VIEW mv_category_counts;
CREATE MATERIALIZED VIEW mv_category_counts AS
SELECT c.id, c.slug, c.name, c.icon, c.color,
       count(p.id) AS product_count,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY p.price_cents) AS median_price_cents
FROM categories c
LEFT JOIN products p
       ON p.category_id = c.id AND p.is_available AND p.is_approved
LEFT JOIN stores s ON s.id = p.store_id
WHERE p.id IS NULL OR s.is_active
GROUP BY c.id;
CREATE UNIQUE INDEX mv_category_counts_id_idx ON mv_category_counts (id);

DROP MATERIALIZED VIEW mv_hot_products;
CREATE MATERIALIZED VIEW mv_hot_products AS
WITH hot AS (
    SELECT p.id FROM products p
    WHERE p.is_available AND p.is_approved
      AND EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id AND s.is_active)
    ORDER BY p.sold_count DESC, p.id LIMIT 100
),
top_rated AS (
    SELECT p.id FROM products p
    WHERE p.is_available AND p.is_approved
      AND EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id AND s.is_active)
    ORDER BY listing_rank_score(p.quality_score) DESC, p.rating DESC NULLS LAST, p.id LIMIT 100
),
newest AS (
    SELECT p.id FROM products p
    WHERE p.is_available AND p.is_approved
      AND EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id AND s.is_active)
    ORDER BY p.created_at DESC, p.id DESC LIMIT 100
)
SELECT p.id, p.name, p.price_cents, p.currency, s.slug AS store_slug, s.name AS store_name,
       p.category_id, p.sold_count, p.rating, p.quality_score, p.stock, p.created_at
FROM products p
JOIN stores s ON s.id = p.store_id
WHERE p.id IN (SELECT id FROM hot UNION SELECT id FROM top_rated UNION SELECT id FROM newest);
CREATE UNIQUE INDEX mv_hot_products_id_idx ON mv_hot_products (id);
