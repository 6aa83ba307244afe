-- Materialized views behind the home page, refreshed CONCURRENTLY by refresh_views, which
-- needs a unique index on each.

CREATE MATERIALIZED VIEW mv_category_counts AS
SELECT c.id, c.slug, c.name, c.icon, c.color,
       count(p.id) AS product_count
FROM categories c
LEFT JOIN products p
       ON p.category_id = c.id AND p.is_available AND p.is_approved
LEFT JOIN stores s ON s.id = p.store_id
WHERE p.id IS NULL OR s.is_active
GROUP BY c.id;
CREATE UNIQUE INDEX mv_category_counts_id_idx ON mv_category_counts (id);

-- The home page's three lists hold at most 10 products each; the view keeps the top 100 of
-- each ordering so it stays small and fast to refresh whatever the catalog size.
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
    ORDER BY p.quality_score DESC NULLS LAST, p.rating DESC NULLS LAST, p.id LIMIT 100
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
