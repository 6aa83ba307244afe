-- purchase_queue_key(): inlined into the statement that calls it (bench/purchase/RESULTS.md).
--
-- Its body concatenated text with a uuid, which resolves to anytextcat(text, anynonarray):
-- STABLE, since some types' output depends on settings. An IMMUTABLE SQL function whose body
-- is not immutable is never inlined, so purchase()'s PERFORM of the queue lock ran it through
-- fmgr_sql, which parses, analyses and plans the body again on every call: 8% of the CPU a
-- purchase took in its backend, in a perf profile of one client buying back to back.
--
-- The explicit ::text cast (uuid_out, immutable) makes the body immutable, so it is inlined
-- and folded into the caller's plan. The key is the same text hashed the same way: a queue lock
-- taken before this migration and one taken after it are the same lock.

CREATE OR REPLACE FUNCTION purchase_queue_key(p_product uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-product:' || p_product::text, 0)
$$;
