-- The claim of a user's Idempotency-Key in a tenant, for every operation that takes one
-- (purchase(), credit_wallet(), which call it first). It sets the transaction's tenant to
-- p_tenant before anything else: the operation under a key runs in the key's tenant, with
-- row-level security on (docs/decisions/0040). Keys are scoped by tenant: the same user and
-- key in two tenants are two keys, with two locks. Returns the outcome stored under
-- (p_tenant, p_user, p_key), as the caller answers it: a replay (replayed, the original
-- request's id) when the fingerprint matches, 422 idempotency_key_reused when it does not. No
-- row: the key is unclaimed, and this transaction now holds its lock until it ends, so a
-- duplicate arriving meanwhile waits and then replays.
--
-- Keys of one user share one namespace across routes: an admin's key used for a purchase and
-- then for a credit is 422, never a second outcome. The advisory lock (idempotency_lock_key)
-- is free unless a duplicate of this request is running: it is tried without waiting first,
-- and lock_timeout is set to p_key_wait only when a wait is needed (then 409 in the caller).
--
-- idempotency_keys is partitioned by day, and its unique keys must include the day, so the
-- lock, not an index, keeps one claim per key; the lookup walks the primary key (tenant_id,
-- key, created_at, user_sub) in every partition the key can live in. A key row's created_at is its
-- transaction's start, and that transaction committed before this lookup: no row is newer
-- than a day past this transaction's start, so the partitions created ahead (maintenance keeps
-- a week) are pruned before execution (tests/integration/test_query_plans.py checks).
-- edgemart: requires idempotency_lock_key

CREATE OR REPLACE FUNCTION claim_idempotency_key(
    p_tenant uuid, p_user text, p_key text, p_fingerprint text, p_request_id text,
    p_key_ttl interval, p_key_wait interval
) RETURNS TABLE (status integer, body jsonb, replayed boolean, original_request_id text)
LANGUAGE plpgsql AS $$
DECLARE
    existing idempotency_keys%ROWTYPE;
BEGIN
    PERFORM set_config('edgemart.tenant_id', p_tenant::text, true);
    IF NOT pg_try_advisory_xact_lock(idempotency_lock_key(p_tenant, p_user, p_key)) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_key_wait) * 1000)::int || 'ms',
                           true);
        PERFORM pg_advisory_xact_lock(idempotency_lock_key(p_tenant, p_user, p_key));
        PERFORM set_config('lock_timeout', '0', true);
    END IF;
    SELECT * INTO existing FROM idempotency_keys k
    WHERE k.tenant_id = p_tenant AND k.key = p_key AND k.user_sub = p_user AND k.created_at > now() - p_key_ttl
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
