-- edgemart: no-transaction
-- products_sold_idx (sold_count DESC, id) serves no query: the search's popular order walks
-- products_popular_idx (sold_count DESC, id DESC, listed products only) and the home page's
-- hot list products_category_popular_idx. Every purchase changes sold_count, so its update
-- is never HOT and writes an entry into every index of products: one index fewer is one
-- entry fewer per purchase (docs/decisions/0049-capacity-ceiling.md).
DROP INDEX CONCURRENTLY IF EXISTS products_sold_idx;
