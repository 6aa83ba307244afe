-- Money rules (docs/decisions/0002-money-rules.md): idempotency keys belong to their user, a
-- seller cannot buy their own product, the platform fee rounds half up to the cent, and a
-- marketplace sells in one currency.
--
-- 1. Keys per user. A key was global: another user who sent the same key (one that can be
--    guessed) got 422 idempotency_key_reused, and the key's owner could no longer buy with it.
--    Now a claim is looked up by (user, key), and the key's advisory lock is a hash of both,
--    idempotency_lock_key(): the user's hash seeds the key's hash, so no separator in the
--    text can make two pairs one, and a collision of two pairs' hashes only makes one wait
--    for the other, never shares a claim. The lookup still walks idempotency_keys' primary
--    key (key, created_at, user_sub): the user is checked in the index, and a key that other
--    users also sent has a handful of entries at most.
-- 2. A store's owner (stores.owner_sub) buying one of its products is refused with 409
--    cannot_buy_own_product, decided from the product's read before anything is written,
--    stored under the key, replayed and written to failed_transactions like out_of_stock; in
--    queued mode enqueue_purchase() refuses it before it stores an order. It comes right after
--    404: an unavailable product is 404 to its seller too, and the seller's own product is
--    refused whatever its price or stock.
-- 3. The fee was `total * bps / 10000`, truncated: at 10% every order below 10 cents paid
--    none. platform_fee() rounds half up to the cent, and purchase() and apply_queued_orders()
--    both use it. It is an SQL expression the planner inlines (test_query_plans checks).
-- 4. One currency. purchase() takes the marketplace's currency (MARKETPLACE_CURRENCY); a
--    product listed in another one is refused exactly as an unavailable product (404
--    product_not_found), both when it is read and in the stock UPDATE's re-checks of the
--    product's own row, and an order records the currency it was charged in.
--
-- Lock order, statements and plans are otherwise those of migrations 0015-0017; outcomes are
-- unchanged but for the rules above.

CREATE FUNCTION platform_fee(total bigint, bps integer) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (total * bps + 5000) / 10000
$$;

CREATE FUNCTION idempotency_lock_key(p_user text, p_key text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-key:' || p_key, hashtextextended(p_user, 0))
$$;

CREATE FUNCTION purchase_refusal_code(
    available boolean,
    own_product boolean,
    unit_price bigint,
    stock integer,
    quantity integer,
    expected_unit_price bigint
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT coalesce(available, false) THEN 'product_not_found'
        WHEN own_product THEN 'cannot_buy_own_product'
        WHEN expected_unit_price IS NOT NULL AND unit_price <> expected_unit_price
            THEN 'price_changed'
        WHEN stock < quantity THEN 'out_of_stock'
    END
$$;

DROP FUNCTION purchase_refusal_code(boolean, bigint, integer, integer, bigint);

DROP FUNCTION enqueue_purchase(text, text, text, uuid, integer, bigint, text, interval);

CREATE FUNCTION enqueue_purchase(
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

DROP FUNCTION purchase(text, text, text, uuid, integer, bigint, integer, text, interval, interval,
                       boolean);

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
    p_queue_enabled boolean,
    p_currency text
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    existing idempotency_keys%ROWTYPE;
    switch_on boolean;
    retry_after integer;
    available boolean;
    own_product boolean;
    unit_price bigint;
    seller uuid;
    stock_now integer;
    mode text;
    total bigint;
    fee bigint;
    outcome_status integer;
    outcome_body jsonb;
    failure text;
BEGIN
    -- The key's lock is free unless a duplicate of this request is running: only then wait
    -- for it, at most p_key_wait. The lock is the user's key, not the key alone.
    IF NOT pg_try_advisory_xact_lock(idempotency_lock_key(p_user, p_key)) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms',
                           true);
        PERFORM pg_advisory_xact_lock(idempotency_lock_key(p_user, p_key));
        PERFORM set_config('lock_timeout', '0', true);
    END IF;

    -- A key row's created_at is its transaction's start, and that transaction committed
    -- before this lookup: no row is newer than a day past this transaction's start, so the
    -- partitions created ahead (maintenance keeps a week) are pruned before execution.
    SELECT * INTO existing FROM idempotency_keys k
    WHERE k.key = p_key AND k.user_sub = p_user AND k.created_at > now() - p_key_ttl
      AND k.created_at < now() + interval '1 day'
    ORDER BY k.created_at DESC LIMIT 1;
    IF FOUND THEN
        IF existing.fingerprint <> p_fingerprint THEN
            RETURN QUERY SELECT 422, jsonb_build_object('code', 'idempotency_key_reused'), false,
                p_request_id;
        ELSE
            RETURN QUERY SELECT existing.response_status, existing.response_body, true,
                existing.request_id;
        END IF;
        RETURN;
    END IF;

    FOR attempt IN 1..3 LOOP
        SELECT (p.is_available AND p.is_approved AND s.is_active AND p.currency = p_currency),
               s.owner_sub = p_user, p.price_cents, p.store_id, p.stock, p.purchase_mode,
               ks.enabled, GREATEST(1, ceil(extract(epoch FROM ks.cooldown_until - now())))::int
        INTO available, own_product, unit_price, seller, stock_now, mode, switch_on, retry_after
        FROM (SELECT 1) AS one
        LEFT JOIN kill_switches ks ON ks.name = 'purchases'
        LEFT JOIN products p ON p.id = p_product
        LEFT JOIN stores s ON s.id = p.store_id;

        IF attempt = 1 AND switch_on THEN
            INSERT INTO failed_transactions
                (user_sub, product_id, idempotency_key, error_code, message, request_id)
            VALUES (p_user, p_product, p_key, 'purchases_disabled',
                    'purchases are switched off', p_request_id);
            RETURN QUERY SELECT 503, jsonb_build_object(
                'code', 'purchases_disabled', 'retry_after',
                GREATEST(coalesce(retry_after, 60), 60)
            ), false, p_request_id;
            RETURN;
        END IF;

        IF p_queue_enabled AND mode = 'queued' THEN
            RETURN QUERY SELECT * FROM enqueue_purchase(p_user, p_key, p_fingerprint, p_product,
                p_quantity, p_expected_unit_price, p_request_id, p_key_ttl, p_currency);
            RETURN;
        END IF;

        failure := purchase_refusal_code(available, own_product, unit_price, stock_now,
                                         p_quantity, p_expected_unit_price);
        EXIT WHEN failure IS NOT NULL;
        total := unit_price * p_quantity;
        fee := platform_fee(total, p_fee_basis_points);

        BEGIN
            -- One statement writes the sale: every row is selected from the wallet debit,
            -- so when the balance is short nothing is written and no row comes back.
            WITH debit AS (
                UPDATE wallets w SET balance_cents = w.balance_cents - total, updated_at = now()
                WHERE w.user_sub = p_user AND w.balance_cents >= total
                RETURNING 1
            ), new_order AS (
                INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                                    total_cents, currency, status, idempotency_key, request_id)
                SELECT p_user, p_product, seller, p_quantity, unit_price, total, p_currency,
                       'completed', p_key, p_request_id
                FROM debit
                RETURNING *
            ), payout AS (
                INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
                SELECT o.id, seller, total - fee, fee FROM new_order o
            ), audit AS (
                INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details,
                                       request_id)
                SELECT p_user, 'purchase', 'order', o.id::text,
                       jsonb_build_object('product_id', p_product, 'quantity', p_quantity,
                                          'total_cents', total, 'fee_cents', fee),
                       p_request_id
                FROM new_order o
            ), receipt AS (
                INSERT INTO idempotency_keys
                    (user_sub, key, expires_at, fingerprint, status, response_status,
                     response_body, request_id)
                SELECT p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', 201,
                       order_json(o::orders), p_request_id
                FROM new_order o
                RETURNING response_body
            )
            SELECT r.response_body INTO outcome_body FROM receipt r;
            IF outcome_body IS NULL THEN
                failure := 'insufficient_funds';
                EXIT;
            END IF;

            -- The row lock: last, and held only until COMMIT. Buyers of the product queue for
            -- it on its queue lock first, so that each COMMIT wakes one of them. Only the
            -- primary key can find the row (migration 0014), and the re-checks are columns of
            -- the row itself.
            PERFORM pg_advisory_xact_lock(purchase_queue_key(p_product));
            UPDATE products p
            SET stock = p.stock - p_quantity, sold_count = p.sold_count + p_quantity,
                updated_at = now()
            WHERE p.id = p_product AND p.is_available AND p.is_approved
              AND p.stock >= p_quantity
              AND p.price_cents IS NOT DISTINCT FROM unit_price
              AND p.store_id IS NOT DISTINCT FROM seller
              AND p.currency IS NOT DISTINCT FROM p_currency;
            IF FOUND THEN
                RETURN QUERY SELECT 201, outcome_body, false, p_request_id;
                RETURN;
            END IF;
            -- Changed since it was read: undo this attempt's writes and read it again.
            RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'changed while buying';
        EXCEPTION
            WHEN SQLSTATE 'EM001' THEN
                outcome_body := NULL;  -- the savepoint undid the debit and every row
        END;
    END LOOP;

    IF failure IS NULL THEN
        -- Three reads in a row were outdated by the time of their UPDATE: refuse as the
        -- product is now, or as repriced.
        SELECT (p.is_available AND p.is_approved AND s.is_active AND p.currency = p_currency),
               s.owner_sub = p_user, p.price_cents, p.stock
        INTO available, own_product, unit_price, stock_now
        FROM products p JOIN stores s ON s.id = p.store_id WHERE p.id = p_product;
        failure := coalesce(purchase_refusal_code(available, own_product, unit_price, stock_now,
                                                  p_quantity, p_expected_unit_price),
                            'price_changed');
    END IF;
    outcome_status := CASE failure WHEN 'product_not_found' THEN 404
                                   WHEN 'insufficient_funds' THEN 402 ELSE 409 END;
    outcome_body := jsonb_build_object('code', failure);
    IF failure = 'price_changed' THEN
        outcome_body := outcome_body || jsonb_build_object('current_unit_price_cents', unit_price);
    END IF;
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

-- apply_queued_orders(): migration 0012's, with the fee from platform_fee().
CREATE OR REPLACE FUNCTION apply_queued_orders(
    p_product uuid, p_orders uuid[], p_fee_basis_points integer
)
RETURNS TABLE (order_id uuid, status text, failure_code text)
LANGUAGE plpgsql AS $$
DECLARE
    buyers text[];
    balances bigint[];
    debits bigint[];
    buyer integer;
    remaining integer;
    sold integer;
    o orders%ROWTYPE;
    completed uuid[];
    failed uuid[];
    failures text[];
    settled uuid[];
    settled_status text[];
    settled_code text[];
    written integer;
BEGIN
    -- Outside the attempts, so a retried attempt keeps the locks.
    SELECT coalesce(array_agg(w.user_sub ORDER BY w.user_sub), '{}'),
           coalesce(array_agg(w.balance_cents ORDER BY w.user_sub), '{}')
    INTO buyers, balances
    FROM (SELECT w.user_sub, w.balance_cents FROM wallets w
          WHERE w.user_sub IN (SELECT q.user_sub FROM orders q
                               WHERE q.id = ANY(p_orders) AND q.product_id = p_product
                                 AND q.status = 'queued')
          ORDER BY w.user_sub
          FOR UPDATE) w;

    FOR attempt IN 1..2 LOOP
        sold := 0;
        debits := array_fill(0::bigint, ARRAY[cardinality(buyers)]);
        completed := '{}';
        failed := '{}';
        failures := '{}';
        settled := '{}';
        settled_status := '{}';
        settled_code := '{}';
        BEGIN
            IF attempt = 1 THEN
                SELECT p.stock INTO remaining FROM products p WHERE p.id = p_product;
            ELSE
                SELECT p.stock INTO remaining FROM products p WHERE p.id = p_product FOR UPDATE;
            END IF;
            remaining := coalesce(remaining, 0);
            FOR o IN
                SELECT * FROM orders
                WHERE id = ANY(p_orders) AND product_id = p_product
                ORDER BY created_at, id
            LOOP
                buyer := array_position(buyers, o.user_sub);
                IF o.status <> 'queued' THEN  -- applied before (a redelivery): as it is
                    settled := settled || o.id;
                    settled_status := settled_status || o.status;
                    settled_code := settled_code || o.failure_code;
                ELSIF o.quantity > remaining THEN
                    failed := failed || o.id;
                    failures := failures || 'out_of_stock'::text;
                ELSIF buyer IS NULL OR balances[buyer] - debits[buyer] < o.total_cents THEN
                    failed := failed || o.id;
                    failures := failures || 'insufficient_funds'::text;
                ELSE
                    debits[buyer] := debits[buyer] + o.total_cents;
                    remaining := remaining - o.quantity;
                    sold := sold + o.quantity;
                    completed := completed || o.id;
                END IF;
            END LOOP;

            IF cardinality(completed) > 0 THEN
                UPDATE wallets w
                SET balance_cents = w.balance_cents - d.debit, updated_at = now()
                FROM unnest(buyers, debits) AS d (user_sub, debit)
                WHERE w.user_sub = d.user_sub AND d.debit > 0;
                WITH done AS (
                    UPDATE orders SET status = 'completed', updated_at = now()
                    WHERE id = ANY(completed) AND orders.status = 'queued'
                    RETURNING *
                ), paid AS (
                    INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
                    SELECT d.id, d.store_id,
                           d.total_cents - platform_fee(d.total_cents, p_fee_basis_points),
                           platform_fee(d.total_cents, p_fee_basis_points)
                    FROM done d
                    RETURNING fee_cents
                ), audited AS (
                    -- One audit row per applied batch (the direct path writes one per
                    -- purchase; here the batch is the unit of work).
                    INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details)
                    SELECT 'order_worker', 'purchase_batch', 'product', p_product::text,
                           jsonb_build_object(
                               'order_ids', to_jsonb(completed), 'quantity', sold,
                               'total_cents', (SELECT sum(d.total_cents) FROM done d),
                               'fee_cents', (SELECT sum(fee_cents) FROM paid))
                )
                SELECT count(*) INTO written FROM done;
                IF written <> cardinality(completed) THEN  -- changed since it was read
                    RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'orders moved';
                END IF;
                UPDATE products SET stock = stock - sold, sold_count = sold_count + sold,
                                    updated_at = now()
                WHERE id = p_product AND stock >= sold;
                IF NOT FOUND THEN  -- the stock read went stale
                    RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'stock moved';
                END IF;
            END IF;
            IF cardinality(failed) > 0 THEN
                WITH refused AS (
                    UPDATE orders AS refusal
                    SET status = 'failed', failure_code = f.code, updated_at = now()
                    FROM unnest(failed, failures) AS f (id, code)
                    WHERE refusal.id = f.id AND refusal.status = 'queued'
                    RETURNING refusal.*
                ), recorded AS (
                    INSERT INTO failed_transactions
                        (user_sub, product_id, idempotency_key, error_code, message, request_id)
                    SELECT r.user_sub, r.product_id, r.idempotency_key, r.failure_code,
                           r.failure_code, r.request_id
                    FROM refused r
                )
                SELECT count(*) INTO written FROM refused;
                IF written <> cardinality(failed) THEN  -- changed since it was read
                    RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'orders moved';
                END IF;
            END IF;
            EXIT;
        EXCEPTION WHEN SQLSTATE 'EM001' THEN
            IF attempt = 2 THEN  -- cannot happen with the product locked: fail the batch
                RAISE EXCEPTION 'applying % orders of % did not settle', cardinality(p_orders),
                    p_product;
            END IF;
        END;
    END LOOP;

    RETURN QUERY
        SELECT s.id, s.st, s.code FROM unnest(settled, settled_status, settled_code)
            AS s (id, st, code)
        UNION ALL
        SELECT c, 'completed'::text, NULL::text FROM unnest(completed) AS c
        UNION ALL
        SELECT f.id, 'failed'::text, f.code FROM unnest(failed, failures) AS f (id, code);
END;
$$;
