-- purchase(): take the hot row lock last (bench/purchase/RESULTS.md).
--
-- A product's row lock is held from its stock UPDATE until COMMIT, and purchases of one
-- product queue on it. Migration 0010 took it first and then debited the wallet and wrote the
-- order, payout, audit and idempotency rows while holding it. Now everything that does not
-- need the lock happens before it: the product is read (no lock) to price the order and to
-- refuse early what is already unavailable, out of stock or repriced; the wallet is debited
-- and every row written; and only then the conditional stock UPDATE runs, re-checking stock,
-- availability and the price it was read at. If that UPDATE finds nothing (the stock went or
-- the product changed in between) the block's savepoint undoes the debit and the rows, and
-- the outcome is decided from the product as it is now, exactly as before; if it can still be
-- bought (repriced while no expected price was given, or restocked) the attempt is made again
-- from the new read, at most three times. Under the lock there is only that UPDATE and the
-- commit.
--
-- The order's foreign keys to products and stores are checked at COMMIT
-- (DEFERRABLE INITIALLY DEFERRED): checked at INSERT, before the UPDATE, the check would take
-- FOR KEY SHARE on the hot product row while another purchase holds it, and every such pair
-- of lockers is a new MultiXact on that row. At COMMIT the check reads a row this transaction
-- already holds. The keys are enforced exactly as before, only later in the transaction.
--
-- payouts.store_id loses its foreign key. It is a copy of the payout's order's store, kept for
-- the store's payouts index; the order's own key to stores already guarantees the store, and
-- the key could never catch the copy being wrong, only a store that does not exist. Checked
-- per row it was half the cost of writing a payout (the ledger tests check the copy instead).
--
-- Outcomes are unchanged: 404 before 409 price_changed before 409 out_of_stock before 402.

ALTER TABLE orders ALTER CONSTRAINT orders_product_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orders ALTER CONSTRAINT orders_store_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE payouts DROP CONSTRAINT payouts_store_id_fkey;

-- Raises the refusal a product in this state gives (404, 409 price_changed, 409
-- out_of_stock), or returns when it can be bought.
CREATE FUNCTION purchase_refusal(
    available boolean,
    unit_price bigint,
    stock integer,
    quantity integer,
    expected_unit_price bigint
) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT coalesce(available, false) THEN
        RAISE EXCEPTION USING ERRCODE = 'EM404', MESSAGE = 'product_not_found';
    ELSIF expected_unit_price IS NOT NULL AND unit_price <> expected_unit_price THEN
        RAISE EXCEPTION USING ERRCODE = 'EM409', MESSAGE = 'price_changed';
    ELSIF stock < quantity THEN
        RAISE EXCEPTION USING ERRCODE = 'EM409', MESSAGE = 'out_of_stock';
    END IF;
END;
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

            -- The row lock: last, and held only until COMMIT.
            UPDATE products p
            SET stock = p.stock - p_quantity, sold_count = p.sold_count + p_quantity,
                updated_at = now()
            WHERE p.id = p_product AND p.is_available AND p.is_approved
              AND p.stock >= p_quantity AND p.price_cents = unit_price AND p.store_id = seller
              AND EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id AND s.is_active);
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
