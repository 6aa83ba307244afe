-- Categories with their listed products' count and median price (a scoring feature: a price
-- against its category's), behind the home page and the scorer. refresh_views refreshes it
-- CONCURRENTLY, which needs the unique index.
--
-- The runner drops a materialized view before it applies the view's file again, so the file
-- creates it and its indexes from scratch.

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
