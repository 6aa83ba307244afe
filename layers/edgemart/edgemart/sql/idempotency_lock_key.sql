-- The advisory lock that serialises claims of one user's idempotency key. Keys belong to their
-- user (docs/decisions/0002-money-rules.md) in their tenant (docs/decisions/0040): the
-- tenant's hash seeds the user's, which seeds the key's, so no separator in the text can make
-- two (tenant, user, key) triples one, and a collision of two triples' hashes only makes one
-- wait for the other, never shares a claim. (uuid::text is immutable: the body inlines.)

CREATE OR REPLACE FUNCTION idempotency_lock_key(p_tenant uuid, p_user text, p_key text)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-key:' || p_key,
                            hashtextextended(p_user, hashtextextended(p_tenant::text, 0)))
$$;
