-- Queued purchases for hot items (DESIGN.md §4, API.md POST /purchases 202).
--
-- purchase() gains p_queue_enabled: when true and the product is in queued mode, the request
-- is validated, its order stored as 'queued' (no stock or money moves yet) and the key's
-- response is 202 with that order; the caller enqueues the order id before committing. With
-- p_queue_enabled false (no queue configured) every product is bought directly.
--
-- apply_queued_orders() is the worker's side: one transaction per product per batch. It locks
-- the product row once, takes the batch's queued orders of that product first come first
-- served, completes each one that stock and the buyer's wallet allow (debit, payout), fails
-- the rest (out_of_stock / insufficient_funds, with a failed_transactions row), writes one
-- audit row for the batch and moves the stock in one UPDATE. Orders that are no longer
-- queued (a redelivered message) are reported as they are and never applied twice.

DROP FUNCTION purchase(text, text, text, uuid, integer, bigint, integer, text, interval, interval);

-- A queued order is updated once (queued -> completed/failed). The partial index on queued
-- orders (never used: the worker finds orders by id) made that a non-HOT update, writing a
-- new entry into every index of orders; without it, and with room left on each page, the
-- status change stays on its page (bench/hot_item/RESULTS.md).
DROP INDEX orders_product_queued_idx;
ALTER TABLE orders SET (fillfactor = 80);

CREATE FUNCTION order_json(o orders) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', o.id, 'status', o.status, 'product_id', o.product_id, 'quantity', o.quantity,
        'unit_price_cents', o.unit_price_cents, 'total_cents', o.total_cents,
        'created_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'failure_code', o.failure_code)
$$;

CREATE FUNCTION enqueue_purchase(
    p_user text,
    p_key text,
    p_fingerprint text,
    p_product uuid,
    p_quantity integer,
    p_expected_unit_price bigint,
    p_request_id text,
    p_key_ttl interval
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    product products%ROWTYPE;
    available boolean;
    new_order orders%ROWTYPE;
    outcome_status integer;
    outcome_body jsonb;
BEGIN
    SELECT p.* INTO product FROM products p WHERE p.id = p_product;
    SELECT product.is_available AND product.is_approved AND s.is_active INTO available
    FROM stores s WHERE s.id = product.store_id;
    IF NOT coalesce(available, false) THEN
        outcome_status := 404;
        outcome_body := jsonb_build_object('code', 'product_not_found');
    ELSIF p_expected_unit_price IS NOT NULL AND product.price_cents <> p_expected_unit_price THEN
        outcome_status := 409;
        outcome_body := jsonb_build_object('code', 'price_changed',
                                           'current_unit_price_cents', product.price_cents);
    ELSE
        -- Stock is checked when the worker applies the order, in arrival order; a sold-out
        -- product still takes the request and fails it there, so the outcome is one rule.
        INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                            total_cents, status, idempotency_key, request_id)
        VALUES (p_user, p_product, product.store_id, p_quantity, product.price_cents,
                product.price_cents * p_quantity, 'queued', p_key, p_request_id)
        RETURNING * INTO new_order;
        outcome_status := 202;
        outcome_body := order_json(new_order);
    END IF;
    IF outcome_status = 409 THEN
        INSERT INTO failed_transactions
            (user_sub, product_id, idempotency_key, error_code, message, request_id)
        VALUES (p_user, p_product, p_key, 'price_changed', 'price_changed', p_request_id);
    END IF;
    INSERT INTO idempotency_keys
        (user_sub, key, expires_at, fingerprint, status, response_status, response_body,
         request_id)
    VALUES (p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', outcome_status,
            outcome_body, p_request_id);
    RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
END;
$$;

CREATE FUNCTION apply_queued_orders(p_product uuid, p_orders uuid[], p_fee_basis_points integer)
RETURNS TABLE (order_id uuid, status text, failure_code text)
LANGUAGE plpgsql AS $$
DECLARE
    remaining integer;
    sold integer := 0;
    o orders%ROWTYPE;
    completed uuid[] := '{}';
    failed uuid[] := '{}';
    failures text[] := '{}';
BEGIN
    SELECT p.stock INTO remaining FROM products p WHERE p.id = p_product FOR UPDATE;
    remaining := coalesce(remaining, 0);
    -- Decide each order in arrival order; only the wallet debit is per order (one buyer may
    -- have several orders in a batch). Everything else is written set-wise below. The orders
    -- need no row locks of their own: only this function changes a queued order, always
    -- under its product's row lock, so the product lock serialises any two workers.
    FOR o IN
        SELECT * FROM orders WHERE id = ANY(p_orders) AND product_id = p_product
        ORDER BY created_at, id
    LOOP
        IF o.status <> 'queued' THEN
            RETURN QUERY SELECT o.id, o.status, o.failure_code;  -- applied before: as it is
        ELSIF o.quantity > remaining THEN
            failed := failed || o.id;
            failures := failures || 'out_of_stock'::text;
        ELSE
            UPDATE wallets w SET balance_cents = w.balance_cents - o.total_cents,
                                 updated_at = now()
            WHERE w.user_sub = o.user_sub AND w.balance_cents >= o.total_cents;
            IF FOUND THEN
                remaining := remaining - o.quantity;
                sold := sold + o.quantity;
                completed := completed || o.id;
            ELSE
                failed := failed || o.id;
                failures := failures || 'insufficient_funds'::text;
            END IF;
        END IF;
    END LOOP;

    IF cardinality(completed) > 0 THEN
        WITH done AS (
            UPDATE orders SET status = 'completed', updated_at = now()
            WHERE id = ANY(completed)
            RETURNING *
        ), paid AS (
            INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
            SELECT d.id, d.store_id,
                   d.total_cents - d.total_cents * p_fee_basis_points / 10000,
                   d.total_cents * p_fee_basis_points / 10000
            FROM done d
        )
        -- One audit row per applied batch, naming every order in it (the direct path writes
        -- one per purchase; here the batch is the unit of work).
        INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details)
        SELECT 'order_worker', 'purchase_batch', 'product', p_product::text,
               jsonb_build_object(
                   'orders', jsonb_agg(jsonb_build_object(
                       'order_id', d.id, 'user_sub', d.user_sub, 'quantity', d.quantity,
                       'total_cents', d.total_cents,
                       'fee_cents', d.total_cents * p_fee_basis_points / 10000,
                       'request_id', d.request_id)),
                   'quantity', sum(d.quantity), 'total_cents', sum(d.total_cents))
        FROM done d;
        UPDATE products SET stock = stock - sold, sold_count = sold_count + sold,
                            updated_at = now()
        WHERE id = p_product;
        RETURN QUERY SELECT unnest(completed), 'completed'::text, NULL::text;
    END IF;
    IF cardinality(failed) > 0 THEN
        WITH refused AS (
            UPDATE orders AS refusal SET status = 'failed', failure_code = f.code, updated_at = now()
            FROM unnest(failed, failures) AS f (id, code)
            WHERE refusal.id = f.id
            RETURNING refusal.*
        )
        INSERT INTO failed_transactions
            (user_sub, product_id, idempotency_key, error_code, message, request_id)
        SELECT r.user_sub, r.product_id, r.idempotency_key, r.failure_code, r.failure_code,
               r.request_id
        FROM refused r;
        RETURN QUERY SELECT f.id, 'failed'::text, f.code FROM unnest(failed, failures) AS f (id, code);
    END IF;
END;
$$;

CREATE FUNCTION purchase(
    p_user text,
    p_key text,
    p_fingerprint text,
    p_product uuid,
    p_quantity integer,
    p_expected_unit_price bigint,
    p_fee_basis_points integer,
    p_request_id text,
    p_key_ttl interval,
    p_key_wait interval,
    p_queue_enabled boolean
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    existing idempotency_keys%ROWTYPE;
    switch_on boolean;
    retry_after integer;
    unit_price bigint;
    seller uuid;
    total bigint;
    fee bigint;
    new_order orders%ROWTYPE;
    outcome_status integer;
    outcome_body jsonb;
    failure text;
    available boolean;
    current_price bigint;
BEGIN
    PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms', true);
    PERFORM pg_advisory_xact_lock(hashtextextended('purchase-key:' || p_key, 0));
    PERFORM set_config('lock_timeout', '0', true);

    SELECT * INTO existing FROM idempotency_keys k
    WHERE k.key = p_key AND k.created_at > now() - p_key_ttl
    ORDER BY k.created_at DESC LIMIT 1;
    IF FOUND THEN
        IF existing.user_sub <> p_user OR existing.fingerprint <> p_fingerprint THEN
            RETURN QUERY SELECT 422, jsonb_build_object('code', 'idempotency_key_reused'), false,
                p_request_id;
        ELSE
            RETURN QUERY SELECT existing.response_status, existing.response_body, true,
                existing.request_id;
        END IF;
        RETURN;
    END IF;

    SELECT ks.enabled,
           GREATEST(1, ceil(extract(epoch FROM ks.cooldown_until - now())))::int
    INTO switch_on, retry_after
    FROM kill_switches ks WHERE ks.name = 'purchases';
    IF switch_on THEN
        INSERT INTO failed_transactions
            (user_sub, product_id, idempotency_key, error_code, message, request_id)
        VALUES (p_user, p_product, p_key, 'purchases_disabled',
                'purchases are switched off', p_request_id);
        RETURN QUERY SELECT 503, jsonb_build_object(
            'code', 'purchases_disabled', 'retry_after', GREATEST(coalesce(retry_after, 60), 60)
        ), false, p_request_id;
        RETURN;
    END IF;

    IF p_queue_enabled
       AND (SELECT p.purchase_mode FROM products p WHERE p.id = p_product) = 'queued' THEN
        RETURN QUERY SELECT * FROM enqueue_purchase(p_user, p_key, p_fingerprint, p_product,
            p_quantity, p_expected_unit_price, p_request_id, p_key_ttl);
        RETURN;
    END IF;

    BEGIN
        UPDATE products p
        SET stock = p.stock - p_quantity, sold_count = p.sold_count + p_quantity,
            updated_at = now()
        WHERE p.id = p_product AND p.is_available AND p.is_approved AND p.stock >= p_quantity
          AND (p_expected_unit_price IS NULL OR p.price_cents = p_expected_unit_price)
          AND EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id AND s.is_active)
        RETURNING p.price_cents, p.store_id INTO unit_price, seller;
        IF NOT FOUND THEN
            SELECT (p.is_available AND p.is_approved AND s.is_active), p.price_cents
            INTO available, current_price
            FROM products p JOIN stores s ON s.id = p.store_id WHERE p.id = p_product;
            IF NOT coalesce(available, false) THEN
                RAISE EXCEPTION USING ERRCODE = 'EM404', MESSAGE = 'product_not_found';
            ELSIF p_expected_unit_price IS NOT NULL AND current_price <> p_expected_unit_price THEN
                RAISE EXCEPTION USING ERRCODE = 'EM409', MESSAGE = 'price_changed',
                    DETAIL = current_price::text;
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'EM409', MESSAGE = 'out_of_stock';
            END IF;
        END IF;

        total := unit_price * p_quantity;
        fee := total * p_fee_basis_points / 10000;
        UPDATE wallets w SET balance_cents = w.balance_cents - total, updated_at = now()
        WHERE w.user_sub = p_user AND w.balance_cents >= total;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'EM402', MESSAGE = 'insufficient_funds';
        END IF;

        INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                            total_cents, status, idempotency_key, request_id)
        VALUES (p_user, p_product, seller, p_quantity, unit_price, total, 'completed', p_key,
                p_request_id)
        RETURNING * INTO new_order;
        INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
        VALUES (new_order.id, seller, total - fee, fee);
        INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details, request_id)
        VALUES (p_user, 'purchase', 'order', new_order.id::text,
                jsonb_build_object('product_id', p_product, 'quantity', p_quantity,
                                   'total_cents', total, 'fee_cents', fee),
                p_request_id);
        outcome_status := 201;
        outcome_body := jsonb_build_object(
            'id', new_order.id, 'status', new_order.status, 'product_id', new_order.product_id,
            'quantity', new_order.quantity, 'unit_price_cents', new_order.unit_price_cents,
            'total_cents', new_order.total_cents,
            'created_at', to_char(new_order.created_at AT TIME ZONE 'UTC',
                                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'failure_code', NULL);
    EXCEPTION WHEN SQLSTATE 'EM404' OR SQLSTATE 'EM409' OR SQLSTATE 'EM402' THEN
        -- The savepoint of this block undid the stock and wallet changes.
        GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
        outcome_status := CASE SQLSTATE WHEN 'EM404' THEN 404 WHEN 'EM402' THEN 402 ELSE 409 END;
        outcome_body := jsonb_build_object('code', failure);
        IF failure = 'price_changed' THEN
            outcome_body := outcome_body || jsonb_build_object('current_unit_price_cents',
                                                               current_price);
        END IF;
        IF outcome_status <> 404 THEN
            INSERT INTO failed_transactions
                (user_sub, product_id, idempotency_key, error_code, message, request_id)
            VALUES (p_user, p_product, p_key, failure, failure, p_request_id);
        END IF;
    END;

    INSERT INTO idempotency_keys
        (user_sub, key, expires_at, fingerprint, status, response_status, response_body,
         request_id)
    VALUES (p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', outcome_status,
            outcome_body, p_request_id);
    RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
END;
$$;
