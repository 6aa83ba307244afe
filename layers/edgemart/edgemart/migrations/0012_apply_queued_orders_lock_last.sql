-- apply_queued_orders(): lock the batch's orders, not the product, while the batch is worked
-- out; take the product's row lock last (bench/hot_item/RESULTS.md).
--
-- Migration 0010 locked the product row first and held it for the whole batch, so two
-- workers on one hot product (Lambda runs several SQS batches at once) ran one after the
-- other. Now a batch locks its own orders (FOR UPDATE, in arrival order: a redelivered
-- message waits for the worker applying it and then finds it applied) and its buyers'
-- wallets (by user, so two batches sharing buyers cannot deadlock), reads the stock
-- without a lock, debits wallets and writes orders, payouts and the audit row, and only then
-- takes the stock in one conditional UPDATE (stock >= sold). Two batches of one product now
-- overlap everywhere but that UPDATE and their commits.
--
-- If the stock read went stale (another batch or a direct purchase took units in between)
-- the UPDATE finds nothing: a savepoint undoes the attempt and the batch is worked out again
-- with the product row locked first, exactly as in 0010, where the stock cannot move.
-- Outcomes are returned only once an attempt has stuck, so a retried attempt reports nothing
-- twice.
--
-- The batch's audit row names its orders by id with the batch's totals (the orders hold the
-- rest); building one JSON object per order cost more than the order's own UPDATE.

CREATE OR REPLACE FUNCTION apply_queued_orders(
    p_product uuid, p_orders uuid[], p_fee_basis_points integer
)
RETURNS TABLE (order_id uuid, status text, failure_code text)
LANGUAGE plpgsql AS $$
DECLARE
    remaining integer;
    sold integer;
    o orders%ROWTYPE;
    completed uuid[];
    failed uuid[];
    failures text[];
    settled uuid[];
    settled_status text[];
    settled_code text[];
BEGIN
    -- Row locks in one order everywhere, so batches (and direct purchases: wallet, then
    -- product) never deadlock: the batch's orders, its buyers' wallets by user, the product
    -- last. Taken outside the attempts, so a retried attempt keeps them.
    PERFORM 1 FROM orders
    WHERE id = ANY(p_orders) AND product_id = p_product
    ORDER BY created_at, id
    FOR UPDATE;
    PERFORM 1 FROM wallets
    WHERE user_sub IN (SELECT q.user_sub FROM orders q
                       WHERE q.id = ANY(p_orders) AND q.product_id = p_product
                         AND q.status = 'queued')
    ORDER BY user_sub
    FOR UPDATE;

    FOR attempt IN 1..2 LOOP
        sold := 0;
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
            -- Decide each order in arrival order; only the wallet debit is per order (one
            -- buyer may have several orders in a batch). The rest is written set-wise below.
            FOR o IN
                SELECT * FROM orders
                WHERE id = ANY(p_orders) AND product_id = p_product
                ORDER BY created_at, id
            LOOP
                IF o.status <> 'queued' THEN  -- applied before (a redelivery): as it is
                    settled := settled || o.id;
                    settled_status := settled_status || o.status;
                    settled_code := settled_code || o.failure_code;
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
                    RETURNING fee_cents
                )
                -- One audit row per applied batch (the direct path writes one per purchase;
                -- here the batch is the unit of work).
                INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details)
                SELECT 'order_worker', 'purchase_batch', 'product', p_product::text,
                       jsonb_build_object(
                           'order_ids', to_jsonb(completed), 'quantity', sold,
                           'total_cents', (SELECT sum(d.total_cents) FROM done d),
                           'fee_cents', (SELECT sum(fee_cents) FROM paid));
                UPDATE products SET stock = stock - sold, sold_count = sold_count + sold,
                                    updated_at = now()
                WHERE id = p_product AND stock >= sold;
                IF NOT FOUND AND attempt = 1 THEN  -- the stock read went stale
                    RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'stock moved';
                ELSIF NOT FOUND THEN  -- cannot happen under the row lock: fail the batch
                    RAISE EXCEPTION 'stock of % moved under its row lock', p_product;
                END IF;
            END IF;
            IF cardinality(failed) > 0 THEN
                WITH refused AS (
                    UPDATE orders AS refusal
                    SET status = 'failed', failure_code = f.code, updated_at = now()
                    FROM unnest(failed, failures) AS f (id, code)
                    WHERE refusal.id = f.id
                    RETURNING refusal.*
                )
                INSERT INTO failed_transactions
                    (user_sub, product_id, idempotency_key, error_code, message, request_id)
                SELECT r.user_sub, r.product_id, r.idempotency_key, r.failure_code,
                       r.failure_code, r.request_id
                FROM refused r;
            END IF;
            EXIT;
        EXCEPTION WHEN SQLSTATE 'EM001' THEN
            NULL;  -- the savepoint undid the attempt
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
