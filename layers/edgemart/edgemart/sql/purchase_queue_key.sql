-- The advisory lock buyers of one product queue on before purchase()'s stock UPDATE (see
-- purchase.sql). It shares idempotency_lock_key()'s 64-bit hash, with its own prefix.
--
-- The explicit ::text cast matters: `text || uuid` resolves to anytextcat(text, anynonarray),
-- which is STABLE, and an IMMUTABLE SQL function whose body is not immutable is never
-- inlined, so every purchase ran it through fmgr_sql, which parses, analyses and plans the
-- body again on each call (8% of a purchase's backend CPU in a perf profile). uuid_out is
-- immutable, so this body is inlined and folded into the caller's plan
-- (tests/integration/test_query_plans.py checks every scalar SQL function).

CREATE OR REPLACE FUNCTION purchase_queue_key(p_product uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-product:' || p_product::text, 0)
$$;
