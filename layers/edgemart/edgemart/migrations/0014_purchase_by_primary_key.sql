-- purchase(): the stock UPDATE finds its row by primary key alone; the idempotency key's lock
-- is taken without the lock_timeout round when nobody holds it; idempotency_keys keeps one index.
--
-- 1. The conditional stock UPDATE of migration 0011 re-checked `p.price_cents = unit_price`.
--    Given that equality, the generic plan PL/pgSQL settles on after five calls picked
--    products_price_idx (price_cents, id) over products_pkey: both are estimated at one row.
--    Every purchase is a non-HOT update (sold_count is indexed), so each one adds an entry for
--    the same (price, id) to that index, and until VACUUM reclaims them the scan steps over
--    the dead versions of the hot product: on the bench catalog, 262 buffers instead of 4 and
--    0.6-2 ms instead of 0.2 ms, all of it under the row lock. The same re-checks are now
--    written so that no index can serve them: IS NOT DISTINCT FROM (both sides are never
--    NULL, so it means `=`) and the store's is_active as a scalar subquery. That EXISTS had
--    also been pulled up into a hash join that read every store, under the lock.
--    tests/integration/test_query_plans.py checks the generic plan.
-- 2. pg_advisory_xact_lock ran between two set_config calls (lock_timeout for the wait on a
--    concurrent duplicate). The lock is free unless a duplicate is running, so it is first
--    tried without waiting, and the timeout is set only when a wait is needed.
-- 3. idempotency_keys had a primary key (user_sub, key, created_at) and an index (key,
--    created_at) for the lookups, which are all by key. The primary key now leads with the
--    key, (key, created_at, user_sub): the same uniqueness, and one index serves both, so a
--    purchase writes one index entry fewer into the key's partition.
--
-- Outcomes are unchanged.

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key, created_at, user_sub);
DROP INDEX idempotency_keys_key_idx;

CREATE OR REPLACE FUNCTION purchase(
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
    stock_now integer;
    mode text;
    total bigint;
    fee bigint;
    new_order orders%ROWTYPE;
    outcome_status integer;
    outcome_body jsonb;
    failure text;
    available boolean;
BEGIN
    -- The key's lock is free unless a duplicate of this request is running: only then wait
    -- for it, at most p_key_wait.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('purchase-key:' || p_key, 0)) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms',
                           true);
        PERFORM pg_advisory_xact_lock(hashtextextended('purchase-key:' || p_key, 0));
        PERFORM set_config('lock_timeout', '0', true);
    END IF;

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

    FOR attempt IN 1..3 LOOP
        SELECT (p.is_available AND p.is_approved AND s.is_active), p.price_cents, p.store_id,
               p.stock, p.purchase_mode
        INTO available, unit_price, seller, stock_now, mode
        FROM products p JOIN stores s ON s.id = p.store_id WHERE p.id = p_product;

        IF p_queue_enabled AND mode = 'queued' THEN
            RETURN QUERY SELECT * FROM enqueue_purchase(p_user, p_key, p_fingerprint, p_product,
                p_quantity, p_expected_unit_price, p_request_id, p_key_ttl);
            RETURN;
        END IF;

        BEGIN
            PERFORM purchase_refusal(available, unit_price, stock_now, p_quantity,
                                     p_expected_unit_price);
            total := unit_price * p_quantity;
            fee := total * p_fee_basis_points / 10000;
            UPDATE wallets w SET balance_cents = w.balance_cents - total, updated_at = now()
            WHERE w.user_sub = p_user AND w.balance_cents >= total;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'EM402', MESSAGE = 'insufficient_funds';
            END IF;

            INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                                total_cents, status, idempotency_key, request_id)
            VALUES (p_user, p_product, seller, p_quantity, unit_price, total, 'completed',
                    p_key, p_request_id)
            RETURNING * INTO new_order;
            INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
            VALUES (new_order.id, seller, total - fee, fee);
            INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details,
                                   request_id)
            VALUES (p_user, 'purchase', 'order', new_order.id::text,
                    jsonb_build_object('product_id', p_product, 'quantity', p_quantity,
                                       'total_cents', total, 'fee_cents', fee),
                    p_request_id);
            outcome_status := 201;
            outcome_body := order_json(new_order);
            INSERT INTO idempotency_keys
                (user_sub, key, expires_at, fingerprint, status, response_status,
                 response_body, request_id)
            VALUES (p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed',
                    outcome_status, outcome_body, p_request_id);

            -- The row lock: last, and held only until COMMIT. Only the primary key can find
            -- the row: the re-checks are written so that no index can serve them (see the
            -- migration's header).
            UPDATE products p
            SET stock = p.stock - p_quantity, sold_count = p.sold_count + p_quantity,
                updated_at = now()
            WHERE p.id = p_product AND p.is_available AND p.is_approved
              AND p.stock >= p_quantity
              AND p.price_cents IS NOT DISTINCT FROM unit_price
              AND p.store_id IS NOT DISTINCT FROM seller
              AND (SELECT s.is_active FROM stores s WHERE s.id = p.store_id);
            IF FOUND THEN
                RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
                RETURN;
            END IF;
            -- Changed since it was read: refuse as the product is now, or try again.
            SELECT (p.is_available AND p.is_approved AND s.is_active), p.price_cents, p.stock
            INTO available, unit_price, stock_now
            FROM products p JOIN stores s ON s.id = p.store_id WHERE p.id = p_product;
            PERFORM purchase_refusal(available, unit_price, stock_now, p_quantity,
                                     p_expected_unit_price);
            IF attempt = 3 THEN
                RAISE EXCEPTION USING ERRCODE = 'EM409', MESSAGE = 'price_changed';
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'changed while buying';
        EXCEPTION
            WHEN SQLSTATE 'EM001' THEN
                NULL;  -- the savepoint undid this attempt; read the product again
            WHEN SQLSTATE 'EM404' OR SQLSTATE 'EM409' OR SQLSTATE 'EM402' THEN
                -- The savepoint of this block undid the debit and every row written in it.
                GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
                outcome_status := CASE SQLSTATE WHEN 'EM404' THEN 404 WHEN 'EM402' THEN 402
                                  ELSE 409 END;
                outcome_body := jsonb_build_object('code', failure);
                IF failure = 'price_changed' THEN
                    outcome_body := outcome_body || jsonb_build_object(
                        'current_unit_price_cents', unit_price);
                END IF;
                EXIT;
        END;
    END LOOP;

    IF outcome_status <> 404 THEN
        INSERT INTO failed_transactions
            (user_sub, product_id, idempotency_key, error_code, message, request_id)
        VALUES (p_user, p_product, p_key, failure, failure, p_request_id);
    END IF;
    INSERT INTO idempotency_keys
        (user_sub, key, expires_at, fingerprint, status, response_status, response_body,
         request_id)
    VALUES (p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', outcome_status,
            outcome_body, p_request_id);
    RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
END;
$$;
