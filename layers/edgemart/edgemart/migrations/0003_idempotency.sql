-- Idempotency keys, range-partitioned by UTC day so expiry is a DROP of a whole partition.
--
-- A unique index on a partitioned table must include the partition key, so the primary key
-- below cannot by itself keep (user_sub, key) unique across days. Claims of one key are
-- therefore serialised with a transaction-scoped advisory lock on the key's hash, and looked
-- up in every partition the key could live in (sql/claim_idempotency_key.sql).
-- edgemart: requires create_idempotency_partitions

CREATE TABLE idempotency_keys (
    user_sub         text NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    fingerprint      text NOT NULL,
    status           text NOT NULL CHECK (status IN ('in_progress', 'completed')),
    response_status  integer,
    response_body    jsonb,
    request_id       text,
    PRIMARY KEY (user_sub, key, created_at)
) PARTITION BY RANGE (created_at);

-- The first days' partitions; the maintenance job keeps creating them ahead.
SELECT create_idempotency_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
