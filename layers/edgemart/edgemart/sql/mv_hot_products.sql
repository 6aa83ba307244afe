-- The products behind the home page's three lists (hot, top rated, newest), refreshed
-- CONCURRENTLY by refresh_views, which needs the unique index. Each list shows at most 10; the
-- view keeps the top 100 of each ordering so it stays small and fast to refresh whatever the
-- catalog size. Top rated ranks by listing_rank_score, as search does.
--
-- The runner drops a materialized view before it applies the view's file again, so the file
-- creates it and its indexes from scratch.
-- edgemart: requires listing_rank_score

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
