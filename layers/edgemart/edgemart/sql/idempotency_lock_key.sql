-- The advisory lock that serialises claims of one user's idempotency key. Keys belong to their
-- user (docs/decisions/0002-money-rules.md): the user's hash seeds the key's hash, so no
-- separator in the text can make two (user, key) pairs one, and a collision of two pairs'
-- hashes only makes one wait for the other, never shares a claim.

CREATE OR REPLACE FUNCTION idempotency_lock_key(p_user text, p_key text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('purchase-key:' || p_key, hashtextextended(p_user, 0))
$$;
