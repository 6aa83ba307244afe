-- Idempotency keys, range-partitioned by UTC day so expiry is a DROP of a whole partition.
--
-- A unique index on a partitioned table must include the partition key, so the primary key
-- below cannot by itself keep (user_sub, key) unique across days. Claims of one key are
-- therefore serialised with a transaction-scoped advisory lock on the key's hash, and looked
-- up in every partition the key could live in (DESIGN.md §4).

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

-- Creates the daily partitions covering [first_day, first_day + days) that do not exist yet.
-- Returns the names it created. Called by this migration and by the maintenance job.
CREATE FUNCTION create_idempotency_partitions(first_day date, days integer)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    day date;
    partition_name text;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        partition_name := 'idempotency_keys_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF idempotency_keys FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            RETURN NEXT partition_name;
        END IF;
    END LOOP;
END;
$$;

SELECT create_idempotency_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
