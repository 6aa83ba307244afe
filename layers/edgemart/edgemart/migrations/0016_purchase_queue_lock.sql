-- purchase(): buyers of one product queue on one lock before the stock UPDATE, so each
-- hand-over of the product's row wakes one buyer instead of all of them
-- (bench/purchase/RESULTS.md).
--
-- Waiting for a row another transaction is updating, PostgreSQL takes a heavyweight lock on
-- that row version's tuple and waits for the updater's transaction id. Every purchase writes
-- a new version of the hot product's row, at a new TID, so its waiters are spread over the
-- tuple locks of versions that are already dead: when the holder commits, every buyer waiting
-- on it wakes, finds the version it waited for replaced, and chases the newest one, where all
-- but one wait again. On the bench's hot product at 32 clients (pgbench calling purchase()),
-- sampled pg_stat_activity showed 57% of buyers waiting on a transaction id and 34% on the
-- lock manager's LWLock, and the machine made 95 context switches per purchase; with the
-- queue lock, they wait on it, and the machine makes 9.
--
-- Now the buyer takes a transaction-scoped advisory lock on the product (purchase_queue_key)
-- just before its stock UPDATE. The lock manager grants it in arrival order and wakes only the
-- one it grants it to, and that buyer's UPDATE finds the row free: the holder of the queue
-- lock is the only purchase that can be updating it. The lock is released with the row lock
-- (at COMMIT or ROLLBACK, or with the attempt's savepoint when the UPDATE found the product
-- changed), so it covers the same statements the row lock did. It is only a queue: the conditional
-- UPDATE still decides the stock, and anything else that updates the product (admin, the
-- queued-order worker) does not take it and is ordered by the row lock as before.
--
-- Every purchase takes its locks in the same order (the key's advisory lock, the wallet's row,
-- the product's queue lock, the product's row) and one of each, so the queue lock adds no
-- deadlock. The key's lock and the queue lock use the same 64-bit hash of distinct prefixes.
--
-- Outcomes are unchanged.

CREATE FUNCTION purchase_queue_key(p_product uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-product:' || p_product, 0)
$$;

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
    available boolean;
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
    -- for it, at most p_key_wait.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('purchase-key:' || p_key, 0)) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms',
                           true);
        PERFORM pg_advisory_xact_lock(hashtextextended('purchase-key:' || p_key, 0));
        PERFORM set_config('lock_timeout', '0', true);
    END IF;

    -- A key row's created_at is its transaction's start, and that transaction committed
    -- before this lookup: no row is newer than a day past this transaction's start, so the
    -- partitions created ahead (maintenance keeps a week) are pruned before execution.
    SELECT * INTO existing FROM idempotency_keys k
    WHERE k.key = p_key AND k.created_at > now() - p_key_ttl
      AND k.created_at < now() + interval '1 day'
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

    FOR attempt IN 1..3 LOOP
        SELECT (p.is_available AND p.is_approved AND s.is_active), p.price_cents, p.store_id,
               p.stock, p.purchase_mode, ks.enabled,
               GREATEST(1, ceil(extract(epoch FROM ks.cooldown_until - now())))::int
        INTO available, unit_price, seller, stock_now, mode, switch_on, retry_after
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
                p_quantity, p_expected_unit_price, p_request_id, p_key_ttl);
            RETURN;
        END IF;

        failure := purchase_refusal_code(available, unit_price, stock_now, p_quantity,
                                         p_expected_unit_price);
        EXIT WHEN failure IS NOT NULL;
        total := unit_price * p_quantity;
        fee := total * p_fee_basis_points / 10000;

        BEGIN
            -- One statement writes the sale: every row is selected from the wallet debit,
            -- so when the balance is short nothing is written and no row comes back.
            WITH debit AS (
                UPDATE wallets w SET balance_cents = w.balance_cents - total, updated_at = now()
                WHERE w.user_sub = p_user AND w.balance_cents >= total
                RETURNING 1
            ), new_order AS (
                INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents,
                                    total_cents, status, idempotency_key, request_id)
                SELECT p_user, p_product, seller, p_quantity, unit_price, total, 'completed',
                       p_key, p_request_id
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
              AND p.store_id IS NOT DISTINCT FROM seller;
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
        SELECT (p.is_available AND p.is_approved AND s.is_active), p.price_cents, p.stock
        INTO available, unit_price, stock_now
        FROM products p JOIN stores s ON s.id = p.store_id WHERE p.id = p_product;
        failure := coalesce(purchase_refusal_code(available, unit_price, stock_now, p_quantity,
                                                  p_expected_unit_price), 'price_changed');
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
