-- edgemart: no-transaction
-- Indexes for the read path's keyset pages (search sorts, category browsing, store pages).
-- Built CONCURRENTLY so applying this to a populated, live database takes no long locks;
-- every statement is IF [NOT] EXISTS so a run interrupted part-way can simply run again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_popular_idx
    ON products (sold_count DESC, id DESC) WHERE is_available AND is_approved;
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_category_popular_idx
    ON products (category_id, sold_count DESC, id DESC) WHERE is_available AND is_approved;
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_category_price_idx
    ON products (category_id, price_cents, id) WHERE is_available AND is_approved;
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_category_created_idx
    ON products (category_id, created_at DESC, id DESC) WHERE is_available AND is_approved;
DROP INDEX CONCURRENTLY IF EXISTS products_category_sold_idx;
