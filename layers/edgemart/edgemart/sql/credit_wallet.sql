-- An admin's wallet credit under their Idempotency-Key (docs/decisions/0007-replays-and-
-- credits.md), in one transaction and one round trip: the key's claim, the wallet (created in
-- the marketplace's currency), the audit row and the stored 200 response, all or nothing.
-- Credit and audit are one statement, every row selected from the wallet's upsert.
--
-- In the tenant p_tenant, which the key's claim sets first (docs/decisions/0040): the wallet,
-- the key and the audit row are that tenant's. The signature without p_tenant is kept for processes
-- deployed before migration 0023 while a deploy rolls out: it credits in current_tenant_id().
-- edgemart: requires claim_idempotency_key, current_tenant_id

CREATE OR REPLACE FUNCTION credit_wallet(
    p_tenant uuid,
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
    -- The claim sets the tenant: everything below runs in p_tenant.
    RETURN QUERY SELECT * FROM claim_idempotency_key(p_tenant, p_actor, p_key, p_fingerprint, p_request_id,
                                                     p_key_ttl, p_key_wait);
    IF FOUND THEN
        RETURN;
    END IF;
    WITH credit AS (
        INSERT INTO wallets (tenant_id, user_sub, balance_cents, currency)
        VALUES (p_tenant, p_sub, p_amount, p_currency)
        ON CONFLICT (tenant_id, user_sub) DO UPDATE
        SET balance_cents = wallets.balance_cents + excluded.balance_cents, updated_at = now()
        RETURNING wallets.user_sub, wallets.balance_cents
    ), audit AS (
        INSERT INTO audit_log (tenant_id, actor_sub, action, entity_type, entity_id, details,
                               request_id)
        SELECT p_tenant, p_actor, 'wallet.credit', 'wallet', c.user_sub,
               jsonb_build_object('amount_cents', p_amount, 'reason', p_reason), p_request_id
        FROM credit c
    ), receipt AS (
        INSERT INTO idempotency_keys
            (tenant_id, user_sub, key, expires_at, fingerprint, status, response_status,
             response_body, request_id)
        SELECT p_tenant, p_actor, p_key, now() + p_key_ttl, p_fingerprint, 'completed', 200,
               jsonb_build_object('sub', c.user_sub, 'balance_cents', c.balance_cents),
               p_request_id
        FROM credit c
        RETURNING response_body
    )
    SELECT r.response_body INTO outcome_body FROM receipt r;
    RETURN QUERY SELECT 200, outcome_body, false, p_request_id;
END;
$$;

CREATE OR REPLACE FUNCTION credit_wallet(
    p_actor text, p_key text, p_fingerprint text, p_sub text, p_amount bigint, p_reason text,
    p_currency text, p_request_id text, p_key_ttl interval, p_key_wait interval
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE sql AS $$
    SELECT * FROM credit_wallet(current_tenant_id(), p_actor, p_key, p_fingerprint, p_sub,
                                p_amount, p_reason, p_currency, p_request_id, p_key_ttl,
                                p_key_wait)
$$;
