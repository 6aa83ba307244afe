-- Queued purchases for hot items: purchase() stores a queued product's order as 'queued' and
-- answers 202, and apply_queued_orders() settles a batch of them (sql/purchase.sql,
-- sql/apply_queued_orders.sql). The schema side: orders are updated in place once.

-- A queued order is updated once (queued -> completed/failed). The partial index on queued
-- orders (never used: the worker finds orders by id) made that a non-HOT update, writing a
-- new entry into every index of orders; without it, and with room left on each page, the
-- status change stays on its page (bench/hot_item/RESULTS.md).
DROP INDEX orders_product_queued_idx;
ALTER TABLE orders SET (fillfactor = 80);
