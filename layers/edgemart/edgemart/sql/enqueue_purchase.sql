-- purchase()'s queued mode: the product's order is stored as 'queued' and answered 202, no
-- stock or money moving yet, or refused (404, 409 cannot_buy_own_product, 409 price_changed).
-- edgemart: requires order_json

CREATE OR REPLACE FUNCTION enqueue_purchase(
    p_user text,
    p_key text,
    p_fingerprint text,
    p_product uuid,
    p_quantity integer,
    p_expected_unit_price bigint,
    p_request_id text,
    p_key_ttl interval,
    p_currency text
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    product products%ROWTYPE;
    available boolean;
    own_product boolean;
    new_order orders%ROWTYPE;
    outcome_status integer;
    outcome_body jsonb;
BEGIN
    SELECT p.* INTO product FROM products p WHERE p.id = p_product;
    SELECT product.is_available AND product.is_approved AND s.is_active
           AND product.currency = p_currency,
           s.owner_sub = p_user
    INTO available, own_product
    FROM stores s WHERE s.id = product.store_id;
    IF NOT coalesce(available, false) THEN
        outcome_status := 404;
        outcome_body := jsonb_build_object('code', 'product_not_found');
    ELSIF own_product THEN
        outcome_status := 409;
        outcome_body := jsonb_build_object('code', 'cannot_buy_own_product');
    ELSIF p_expected_unit_price IS NOT NULL AND product.price_cents <> p_expected_unit_price THEN
        outcome_status := 409;
        outcome_body := jsonb_build_object('code', 'price_changed',
                                           'current_unit_price_cents', product.price_cents);
    ELSE
        -- Stock is checked when the worker applies the order, in arrival order; a sold-out
        -- product still takes the request and fails it there, so the outcome is one rule.
        INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                            total_cents, currency, status, idempotency_key, request_id)
        VALUES (p_user, p_product, product.store_id, p_quantity, product.price_cents,
                product.price_cents * p_quantity, p_currency, 'queued', p_key, p_request_id)
        RETURNING * INTO new_order;
        outcome_status := 202;
        outcome_body := order_json(new_order);
    END IF;
    IF outcome_status = 409 THEN
        INSERT INTO failed_transactions
            (user_sub, product_id, idempotency_key, error_code, message, request_id)
        VALUES (p_user, p_product, p_key, outcome_body->>'code', outcome_body->>'code',
                p_request_id);
    END IF;
    INSERT INTO idempotency_keys
        (user_sub, key, expires_at, fingerprint, status, response_status, response_body,
         request_id)
    VALUES (p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', outcome_status,
            outcome_body, p_request_id);
    RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
END;
$$;
