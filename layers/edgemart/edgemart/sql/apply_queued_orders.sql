-- The queued-order worker's side of a purchase (functions/order_worker): applies one batch of
-- one product's queued orders in one transaction, first come first served. Each order that
-- the stock and its buyer's wallet allow is completed (debit, payout with platform_fee(), the
-- same fee as a direct purchase); the rest fail (out_of_stock / insufficient_funds, with a
-- failed_transactions row). Orders that are no longer queued (a redelivered message) are
-- reported as they are and never applied twice. Returns every order's outcome.
--
-- Two workers on one hot product (Lambda runs several SQS batches at once) overlap everywhere
-- but the stock UPDATE and their commits (bench/hot_item/RESULTS.md). A batch:
--
-- 1. locks its buyers' wallets, ordered by user (so batches never deadlock on them), and
--    reads their balances;
-- 2. reads its orders and the stock (no lock on either) and decides each order in arrival
--    order against the balances and stock it tracks itself;
-- 3. writes everything set-wise: one UPDATE of the wallets, of the orders (only those still
--    `queued`), the payouts, one audit row, and last the stock, in one conditional UPDATE
--    (stock >= sold).
--
-- A redelivered message's order cannot be applied twice: its buyer's wallet lock makes the
-- second batch wait for the first, whose commit it then reads (the order is no longer
-- queued). Should an order change anyway between the read and the write, or the stock read
-- go stale (another batch or a direct purchase took units in between), the attempt's
-- savepoint undoes it and the batch is worked out again with the product row locked first,
-- where the stock cannot move. Outcomes are returned only once an attempt has stuck.
--
-- The batch's audit row names its orders by id with the batch's totals (the orders hold the
-- rest); building one JSON object per order cost more than the order's own UPDATE.
--
-- In the tenant p_tenant, which it sets first (docs/decisions/0040): the message names it, and
-- an order id of another tenant is simply not found (its message is retried, then
-- dead-lettered). The signature without p_tenant is kept for workers deployed before
-- migration 0023 while a deploy rolls out: it applies in current_tenant_id().
-- edgemart: requires platform_fee, current_tenant_id

CREATE OR REPLACE FUNCTION apply_queued_orders(
    p_tenant uuid, p_product uuid, p_orders uuid[], p_fee_basis_points integer
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
    PERFORM set_config('edgemart.tenant_id', p_tenant::text, true);
    -- The tenant's own fee, else the deployment's (p_fee_basis_points), as a direct purchase.
    p_fee_basis_points := coalesce(
        (SELECT t.platform_fee_bps FROM tenants t WHERE t.id = p_tenant), p_fee_basis_points
    );
    -- Outside the attempts, so a retried attempt keeps the locks.
    SELECT coalesce(array_agg(w.user_sub ORDER BY w.user_sub), '{}'),
           coalesce(array_agg(w.balance_cents ORDER BY w.user_sub), '{}')
    INTO buyers, balances
    FROM (SELECT w.user_sub, w.balance_cents FROM wallets w
          WHERE w.tenant_id = p_tenant
            AND w.user_sub IN (SELECT q.user_sub FROM orders q
                               WHERE q.tenant_id = p_tenant AND q.id = ANY(p_orders)
                                 AND q.product_id = p_product
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
                SELECT p.stock INTO remaining FROM products p
                WHERE p.tenant_id = p_tenant AND p.id = p_product;
            ELSE
                SELECT p.stock INTO remaining FROM products p
                WHERE p.tenant_id = p_tenant AND p.id = p_product FOR UPDATE;
            END IF;
            remaining := coalesce(remaining, 0);
            FOR o IN
                SELECT * FROM orders
                WHERE tenant_id = p_tenant AND id = ANY(p_orders) AND product_id = p_product
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
                WHERE w.tenant_id = p_tenant AND w.user_sub = d.user_sub AND d.debit > 0;
                WITH done AS (
                    UPDATE orders SET status = 'completed', updated_at = now()
                    WHERE tenant_id = p_tenant AND id = ANY(completed)
                      AND orders.status = 'queued'
                    RETURNING *
                ), paid AS (
                    INSERT INTO payouts (tenant_id, order_id, store_id, amount_cents, fee_cents)
                    SELECT p_tenant, d.id, d.store_id,
                           d.total_cents - platform_fee(d.total_cents, p_fee_basis_points),
                           platform_fee(d.total_cents, p_fee_basis_points)
                    FROM done d
                    RETURNING fee_cents
                ), audited AS (
                    -- One audit row per applied batch (the direct path writes one per
                    -- purchase; here the batch is the unit of work).
                    INSERT INTO audit_log (tenant_id, actor_sub, action, entity_type, entity_id,
                                           details)
                    SELECT p_tenant, 'order_worker', 'purchase_batch', 'product', p_product::text,
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
                WHERE tenant_id = p_tenant AND id = p_product AND stock >= sold;
                IF NOT FOUND THEN  -- the stock read went stale
                    RAISE EXCEPTION USING ERRCODE = 'EM001', MESSAGE = 'stock moved';
                END IF;
            END IF;
            IF cardinality(failed) > 0 THEN
                WITH refused AS (
                    UPDATE orders AS refusal
                    SET status = 'failed', failure_code = f.code, updated_at = now()
                    FROM unnest(failed, failures) AS f (id, code)
                    WHERE refusal.tenant_id = p_tenant AND refusal.id = f.id
                      AND refusal.status = 'queued'
                    RETURNING refusal.*
                ), recorded AS (
                    INSERT INTO failed_transactions
                        (tenant_id, user_sub, product_id, idempotency_key, error_code, message,
                         request_id)
                    SELECT p_tenant, r.user_sub, r.product_id, r.idempotency_key, r.failure_code,
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

CREATE OR REPLACE FUNCTION apply_queued_orders(
    p_product uuid, p_orders uuid[], p_fee_basis_points integer
)
RETURNS TABLE (order_id uuid, status text, failure_code text)
LANGUAGE sql AS $$
    SELECT * FROM apply_queued_orders(current_tenant_id(), p_product, p_orders,
                                      p_fee_basis_points)
$$;
