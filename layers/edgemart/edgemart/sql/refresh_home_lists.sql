-- The home page's lists of one tenant, rebuilt from its catalog in the caller's transaction
-- (refresh_views, once per tenant; migration 0023 for every tenant): category_counts
-- (categories with their listed products' count and median price, also a scoring feature) and
-- home_products (the top 100 of each of the home page's three orderings: hot, top rated,
-- newest). Readers see the old rows until the transaction commits.
--
-- Plain tenant-scoped tables, not materialized views: a view can only be refreshed whole, by
-- its owner, and under forced row-level security would hold only what its owner may see.
-- Here each tenant's rows are replaced on their own, by the application role, and a refresh
-- costs the tenant's own catalog, whatever the others hold: the lists walk the tenant's
-- categories (category ids are the tenant's own), each through its category's index, keeping
-- the top 100 of each, and merge them. Same rules as the views had: listed products of active
-- stores; top rated by listing_rank_score, as search ranks.
-- edgemart: requires listing_rank_score

CREATE OR REPLACE FUNCTION refresh_home_lists(p_tenant uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('edgemart.tenant_id', p_tenant::text, true);

    DELETE FROM category_counts WHERE tenant_id = p_tenant;
    INSERT INTO category_counts
        (tenant_id, id, slug, name, icon, color, product_count, median_price_cents)
    SELECT p_tenant, c.id, c.slug, c.name, c.icon, c.color, count(p.id),
           percentile_disc(0.5) WITHIN GROUP (ORDER BY p.price_cents)
    FROM categories c
    LEFT JOIN products p
           ON p.tenant_id = c.tenant_id AND p.category_id = c.id
          AND p.is_available AND p.is_approved
    LEFT JOIN stores s ON s.tenant_id = p.tenant_id AND s.id = p.store_id
    WHERE c.tenant_id = p_tenant AND (p.id IS NULL OR s.is_active)
    GROUP BY c.id, c.slug, c.name, c.icon, c.color;

    DELETE FROM home_products WHERE tenant_id = p_tenant;
    WITH listed AS (
        SELECT p.* FROM products p
        WHERE p.tenant_id = p_tenant AND p.is_available AND p.is_approved
          AND EXISTS (SELECT 1 FROM stores s
                      WHERE s.tenant_id = p.tenant_id AND s.id = p.store_id AND s.is_active)
    ),
    hot AS (
        SELECT top.id FROM categories c CROSS JOIN LATERAL (
            SELECT l.id, l.sold_count FROM listed l WHERE l.category_id = c.id
            ORDER BY l.sold_count DESC, l.id LIMIT 100) top
        WHERE c.tenant_id = p_tenant
        ORDER BY top.sold_count DESC, top.id LIMIT 100
    ),
    top_rated AS (
        SELECT l.id FROM listed l
        ORDER BY listing_rank_score(l.quality_score) DESC, l.rating DESC NULLS LAST, l.id
        LIMIT 100
    ),
    newest AS (
        SELECT top.id FROM categories c CROSS JOIN LATERAL (
            SELECT l.id, l.created_at FROM listed l WHERE l.category_id = c.id
            ORDER BY l.created_at DESC, l.id DESC LIMIT 100) top
        WHERE c.tenant_id = p_tenant
        ORDER BY top.created_at DESC, top.id DESC LIMIT 100
    )
    INSERT INTO home_products
        (tenant_id, id, name, price_cents, currency, store_slug, store_name, category_id,
         sold_count, rating, quality_score, stock, created_at)
    SELECT p_tenant, p.id, p.name, p.price_cents, p.currency, s.slug, s.name, p.category_id,
           p.sold_count, p.rating, p.quality_score, p.stock, p.created_at
    FROM products p
    JOIN stores s ON s.tenant_id = p.tenant_id AND s.id = p.store_id
    WHERE p.tenant_id = p_tenant
      AND p.id IN (SELECT id FROM hot UNION SELECT id FROM top_rated UNION SELECT id FROM newest);
END;
$$;
