-- Wallet credits under an Idempotency-Key, and the index a buyer's order pages walk
-- (docs/decisions/0007-replays-and-credits.md).
--
-- 1. An admin's wallet credit was an upsert and an audit row: the same request sent twice (a
--    retry after a lost response) credited twice. credit_wallet() takes the acting admin's
--    Idempotency-Key and, in one transaction and one round trip, claims it, credits the
--    wallet, writes the audit row and stores the response under the key. A retry finds the key
--    and replays the stored response; the same key with another request is 422; a duplicate
--    still running is waited for, at most p_key_wait (then lock_timeout, 409 in the caller).
-- 2. The claim is purchase()'s (migration 0018), written once here as a function of its own:
--    the advisory lock idempotency_lock_key(user, key), taken without a wait when nobody
--    holds it, then the lookup of the user's earlier claim bounded to the partitions it can
--    live in. Keys of one user share one namespace across routes: an admin's key used for a
--    purchase and then for a credit is 422 idempotency_key_reused, never a second outcome.
--    purchase() keeps its own inlined copy of these steps: it is the measured hot path, and
--    re-creating it to save a dozen lines would add a PL/pgSQL call to every purchase.
-- 3. GET /purchases pages a buyer's orders newest first by (created_at, id). The index on
--    (user_sub, created_at DESC) could not break ties between orders of one instant, so a page
--    boundary between two of them needed a sort of every order at that instant; this one ends
--    with the id, serves `(created_at, id) < (cursor)` as an index condition scanned
--    backwards, and replaces the old index (it serves every query that one did), so a purchase
--    writes no extra index entry.

CREATE INDEX orders_user_created_id_idx ON orders (user_sub, created_at, id);
DROP INDEX orders_user_created_idx;

-- The outcome stored under (p_user, p_key), as the caller answers it: a replay (replayed, the
-- original request's id) when the fingerprint matches, 422 idempotency_key_reused when it does
-- not. No row: the key is unclaimed, and this transaction now holds its lock until it ends.
CREATE FUNCTION claim_idempotency_key(
    p_user text,
    p_key text,
    p_fingerprint text,
    p_request_id text,
    p_key_ttl interval,
    p_key_wait interval
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    existing idempotency_keys%ROWTYPE;
BEGIN
    IF NOT pg_try_advisory_xact_lock(idempotency_lock_key(p_user, p_key)) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms',
                           true);
        PERFORM pg_advisory_xact_lock(idempotency_lock_key(p_user, p_key));
        PERFORM set_config('lock_timeout', '0', true);
    END IF;
    SELECT * INTO existing FROM idempotency_keys k
    WHERE k.key = p_key AND k.user_sub = p_user AND k.created_at > now() - p_key_ttl
      AND k.created_at < now() + interval '1 day'
    ORDER BY k.created_at DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF existing.fingerprint <> p_fingerprint THEN
        RETURN QUERY SELECT 422, jsonb_build_object('code', 'idempotency_key_reused'), false,
            p_request_id;
    ELSE
        RETURN QUERY SELECT existing.response_status, existing.response_body, true,
            existing.request_id;
    END IF;
END;
$$;

-- One credit: the key's claim, the wallet (created in the marketplace's currency), the audit
-- row and the stored 200 response, all or nothing. Credit and audit are one statement, every
-- row selected from the wallet's upsert.
CREATE FUNCTION credit_wallet(
    p_actor text,
    p_key text,
    p_fingerprint text,
    p_sub text,
    p_amount bigint,
    p_reason text,
    p_currency text,
    p_request_id text,
    p_key_ttl interval,
    p_key_wait interval
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    outcome_body jsonb;
BEGIN
    RETURN QUERY SELECT * FROM claim_idempotency_key(p_actor, p_key, p_fingerprint, p_request_id,
                                                     p_key_ttl, p_key_wait);
    IF FOUND THEN
        RETURN;
    END IF;
    WITH credit AS (
        INSERT INTO wallets (user_sub, balance_cents, currency)
        VALUES (p_sub, p_amount, p_currency)
        ON CONFLICT (user_sub) DO UPDATE
        SET balance_cents = wallets.balance_cents + excluded.balance_cents, updated_at = now()
        RETURNING wallets.user_sub, wallets.balance_cents
    ), audit AS (
        INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details, request_id)
        SELECT p_actor, 'wallet.credit', 'wallet', c.user_sub,
               jsonb_build_object('amount_cents', p_amount, 'reason', p_reason), p_request_id
        FROM credit c
    ), receipt AS (
        INSERT INTO idempotency_keys
            (user_sub, key, expires_at, fingerprint, status, response_status, response_body,
             request_id)
        SELECT p_actor, p_key, now() + p_key_ttl, p_fingerprint, 'completed', 200,
               jsonb_build_object('sub', c.user_sub, 'balance_cents', c.balance_cents),
               p_request_id
        FROM credit c
        RETURNING response_body
    )
    SELECT r.response_body INTO outcome_body FROM receipt r;
    RETURN QUERY SELECT 200, outcome_body, false, p_request_id;
END;
$$;
