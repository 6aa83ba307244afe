-- idempotency_keys keeps one index (bench/purchase/RESULTS.md). It had a primary key
-- (user_sub, key, created_at) and an index (key, created_at) for the lookups, which are all by
-- key. The primary key now leads with the key, (key, created_at, user_sub): the same
-- uniqueness, and one index serves both, so a purchase writes one index entry fewer into the
-- key's partition.
--
-- purchase()'s stock UPDATE came to find its row by primary key alone at the same time; that
-- is the function's own text (sql/purchase.sql).

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key, created_at, user_sub);
DROP INDEX idempotency_keys_key_idx;
