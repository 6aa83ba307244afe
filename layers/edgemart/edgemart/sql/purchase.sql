-- A purchase as one server-side function (functions/purchase): one round trip, one
-- transaction holding the key's claim, the refusal or the sale, and the response stored under
-- the key. Returns the response (status, body) and whether it is a replay.
--
-- Order of outcomes: a stored outcome under the user's key is replayed (422 when the key came
-- with another request: claim_idempotency_key()); the kill switch refuses (503, not stored
-- under the key, so a retry after it is lifted buys); then purchase_refusal_code(): 404
-- product_not_found, 409 cannot_buy_own_product, 409 price_changed, 409 out_of_stock; then 402
-- insufficient_funds. Every refusal but 404 writes a failed_transactions row; every outcome
-- but 503 is stored under the key, so a retry replays it. The marketplace sells in one
-- currency (p_currency): a product listed in another is unavailable (404), and an order
-- records the currency it was charged in (docs/decisions/0002-money-rules.md).
--
-- Queued mode (p_queue_enabled and a product in purchase_mode 'queued'): the order is stored
-- as 'queued' and answered 202 with no stock or money moving; the caller enqueues its id before
-- committing and apply_queued_orders() settles it. The refusals are the same rule, but for the
-- stock, which the worker checks in arrival order.
--
-- The hot path. A product's row lock is held from its stock UPDATE until COMMIT, and buyers of
-- one product queue on it, so the work under it and the CPU every purchase takes before it
-- decide a hot item's throughput (bench/purchase/RESULTS.md):
--
-- - The row lock is taken last. The product is read without a lock (with the store and the kill
--   switch, in one query) to price the order and refuse early; then one statement debits the
--   wallet and writes the order, payout, audit and idempotency rows, every row selected from
--   the debit, so a short balance writes nothing and returns no row (402); and only then the
--   conditional stock UPDATE runs, re-checking what is on the product's own row at the price
--   it was read at. If it finds nothing (the stock went or the product changed in between),
--   the attempt's savepoint undoes the debit and the rows and the product is read again, at
--   most three times; a fourth read that could still buy is refused as price_changed. The
--   orders' foreign keys are checked at COMMIT (migration 0011), when the row is already held.
-- - Before the UPDATE, the buyer takes a transaction-scoped advisory lock on the product,
--   purchase_queue_key(). The lock manager grants it in arrival order and wakes only the one
--   it grants it to, and that buyer's UPDATE finds the row free. Without it every waiter of
--   the row woke at each COMMIT and chased the row's newest version (57% of buyers waiting on
--   a transaction id, 95 context switches per purchase at 32 clients; 9 with the queue lock).
--   It is only a queue: the conditional UPDATE still decides the stock, and other writers of
--   the product (admin, the queued-order worker) are ordered by the row lock as before.
--   Every purchase takes its locks in one order (the key's, the wallet's row, the product's
--   queue lock, the product's row), one of each, so the queue lock adds no deadlock.
-- - The stock UPDATE must find its row by primary key alone: its re-checks are written
--   `IS NOT DISTINCT FROM` (never NULL on either side, so `=`) so that no index can serve
--   them. With `p.price_cents = unit_price`, PL/pgSQL's generic plan picked products_price_idx,
--   whose entries for a hot product are mostly dead versions: 262 buffers instead of 4, under
--   the lock (tests/integration/test_query_plans.py checks the plan). It does not re-check the
--   store's is_active: that made every waiter run a subquery again once the lock came free; the
--   attempt's read checks the store.
-- - The refusal is an inlined SQL expression (purchase_refusal_code), and the fee one
--   (platform_fee): neither runs a statement of its own.
--
-- Tenancy (docs/decisions/0040): the purchase happens in the tenant p_tenant, which the key's
-- claim sets first, so every row it reads and writes is that tenant's (row-level security for the
-- application role); its reads name the tenant too, so each is one probe of a key that leads
-- with it, whoever runs it. The signature without p_tenant is kept for processes deployed
-- before migration 0023 while a deploy rolls out: it buys in current_tenant_id().
-- edgemart: requires claim_idempotency_key, order_json, platform_fee, purchase_queue_key
-- edgemart: requires purchase_refusal_code, current_tenant_id

CREATE OR REPLACE FUNCTION purchase(
    p_tenant uuid,
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
    switch_on boolean;
    retry_after integer;
    available boolean;
    own_product boolean;
    unit_price bigint;
    seller uuid;
    stock_now integer;
    queued boolean;
    total bigint;
    fee bigint;
    outcome_status integer;
    outcome_body jsonb;
    failure text;
BEGIN
    -- The claim sets the tenant: everything below runs in p_tenant.
    RETURN QUERY SELECT * FROM claim_idempotency_key(p_tenant, p_user, p_key, p_fingerprint, p_request_id,
                                                     p_key_ttl, p_key_wait);
    IF FOUND THEN
        RETURN;
    END IF;

    FOR attempt IN 1..4 LOOP
        SELECT (p.is_available AND p.is_approved AND s.is_active AND p.currency = p_currency),
               s.owner_sub = p_user, p.price_cents, p.store_id, p.stock,
               p_queue_enabled AND p.purchase_mode = 'queued',
               ks.enabled, GREATEST(1, ceil(extract(epoch FROM ks.cooldown_until - now())))::int
        INTO available, own_product, unit_price, seller, stock_now, queued, switch_on,
             retry_after
        FROM (SELECT 1) AS one
        LEFT JOIN kill_switches ks ON ks.tenant_id = p_tenant AND ks.name = 'purchases'
        LEFT JOIN products p ON p.tenant_id = p_tenant AND p.id = p_product
        LEFT JOIN stores s ON s.tenant_id = p_tenant AND s.id = p.store_id;

        IF attempt = 1 AND switch_on THEN
            INSERT INTO failed_transactions
                (tenant_id, user_sub, product_id, idempotency_key, error_code, message,
                 request_id)
            VALUES (p_tenant, p_user, p_product, p_key, 'purchases_disabled',
                    'purchases are switched off', p_request_id);
            RETURN QUERY SELECT 503, jsonb_build_object(
                'code', 'purchases_disabled', 'retry_after',
                GREATEST(coalesce(retry_after, 60), 60)
            ), false, p_request_id;
            RETURN;
        END IF;

        failure := purchase_refusal_code(available, own_product, unit_price,
                                         CASE WHEN queued THEN NULL ELSE stock_now END,
                                         p_quantity, p_expected_unit_price);
        IF attempt = 4 THEN
            -- Three reads in a row were outdated by the time of their UPDATE: refuse as the
            -- product is now, or as repriced.
            failure := coalesce(failure, 'price_changed');
        END IF;
        EXIT WHEN failure IS NOT NULL;

        IF queued THEN
            INSERT INTO orders (tenant_id, user_sub, product_id, store_id, quantity,
                                unit_price_cents, total_cents, currency, status,
                                idempotency_key, request_id)
            VALUES (p_tenant, p_user, p_product, seller, p_quantity, unit_price, unit_price * p_quantity,
                    p_currency, 'queued', p_key, p_request_id)
            RETURNING order_json(orders.*) INTO outcome_body;
            outcome_status := 202;
            EXIT;
        END IF;

        total := unit_price * p_quantity;
        fee := platform_fee(total, p_fee_basis_points);
        BEGIN
            -- One statement writes the sale: every row is selected from the wallet debit,
            -- so when the balance is short nothing is written and no row comes back.
            WITH debit AS (
                UPDATE wallets w SET balance_cents = w.balance_cents - total, updated_at = now()
                WHERE w.tenant_id = p_tenant AND w.user_sub = p_user
                  AND w.balance_cents >= total
                RETURNING 1
            ), new_order AS (
                INSERT INTO orders (tenant_id, user_sub, product_id, store_id, quantity,
                                    unit_price_cents, total_cents, currency, status,
                                    idempotency_key, request_id)
                SELECT p_tenant, p_user, p_product, seller, p_quantity, unit_price, total, p_currency,
                       'completed', p_key, p_request_id
                FROM debit
                RETURNING *
            ), payout AS (
                INSERT INTO payouts (tenant_id, order_id, store_id, amount_cents, fee_cents)
                SELECT p_tenant, o.id, seller, total - fee, fee FROM new_order o
            ), audit AS (
                INSERT INTO audit_log (tenant_id, actor_sub, action, entity_type, entity_id,
                                       details, request_id)
                SELECT p_tenant, p_user, 'purchase', 'order', o.id::text,
                       jsonb_build_object('product_id', p_product, 'quantity', p_quantity,
                                          'total_cents', total, 'fee_cents', fee),
                       p_request_id
                FROM new_order o
            ), receipt AS (
                INSERT INTO idempotency_keys
                    (tenant_id, user_sub, key, expires_at, fingerprint, status,
                     response_status, response_body, request_id)
                SELECT p_tenant, p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', 201,
                       order_json(o::orders), p_request_id
                FROM new_order o
                RETURNING response_body
            )
            SELECT r.response_body INTO outcome_body FROM receipt r;
            IF outcome_body IS NULL THEN
                failure := 'insufficient_funds';
                EXIT;
            END IF;

            -- The row lock: last, and held only until COMMIT, queued for on the product's
            -- queue lock first.
            PERFORM pg_advisory_xact_lock(purchase_queue_key(p_product));
            UPDATE products p
            SET stock = p.stock - p_quantity, sold_count = p.sold_count + p_quantity,
                updated_at = now()
            WHERE p.tenant_id = p_tenant AND p.id = p_product AND p.is_available AND p.is_approved
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

    IF failure IS NOT NULL THEN
        outcome_status := CASE failure WHEN 'product_not_found' THEN 404
                                       WHEN 'insufficient_funds' THEN 402 ELSE 409 END;
        outcome_body := jsonb_build_object('code', failure);
        IF failure = 'price_changed' THEN
            outcome_body := outcome_body
                || jsonb_build_object('current_unit_price_cents', unit_price);
        END IF;
        IF outcome_status <> 404 THEN
            INSERT INTO failed_transactions
                (tenant_id, user_sub, product_id, idempotency_key, error_code, message,
                 request_id)
            VALUES (p_tenant, p_user, p_product, p_key, failure, failure, p_request_id);
        END IF;
    END IF;
    INSERT INTO idempotency_keys
        (tenant_id, user_sub, key, expires_at, fingerprint, status, response_status,
         response_body, request_id)
    VALUES (p_tenant, p_user, p_key, now() + p_key_ttl, p_fingerprint, 'completed', outcome_status,
            outcome_body, p_request_id);
    RETURN QUERY SELECT outcome_status, outcome_body, false, p_request_id;
END;
$$;

CREATE OR REPLACE FUNCTION purchase(
    p_user text, p_key text, p_fingerprint text, p_product uuid, p_quantity integer,
    p_expected_unit_price bigint, p_fee_basis_points integer, p_request_id text,
    p_key_ttl interval, p_key_wait interval, p_queue_enabled boolean, p_currency text
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE sql AS $$
    SELECT * FROM purchase(current_tenant_id(), p_user, p_key, p_fingerprint, p_product,
                           p_quantity, p_expected_unit_price, p_fee_basis_points,
                           p_request_id, p_key_ttl, p_key_wait, p_queue_enabled, p_currency)
$$;
