-- An order as the API answers it: the body of a purchase's 201 and 202, of a replay, and of
-- GET /purchases/{id} and the buyer's order pages.

CREATE OR REPLACE FUNCTION order_json(o orders) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', o.id, 'status', o.status, 'product_id', o.product_id, 'quantity', o.quantity,
        'unit_price_cents', o.unit_price_cents, 'total_cents', o.total_cents,
        'created_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'failure_code', o.failure_code)
$$;
