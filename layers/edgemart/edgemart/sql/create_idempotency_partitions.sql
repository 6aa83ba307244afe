-- Creates the daily partitions of idempotency_keys covering [first_day, first_day + days) that
-- do not exist yet, and returns the names it created. Called by migration 0003 (the first
-- days) and by the maintenance job, which keeps a week ahead.

CREATE OR REPLACE FUNCTION create_idempotency_partitions(first_day date, days integer)
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
