-- The platform's fee on an order total, in basis points, rounded half up to the cent
-- (docs/decisions/0002-money-rules.md): both purchase paths, purchase() and
-- apply_queued_orders(), take it from here. An SQL expression the planner inlines
-- (tests/integration/test_query_plans.py checks).

CREATE OR REPLACE FUNCTION platform_fee(total bigint, bps integer) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (total * bps + 5000) / 10000
$$;
