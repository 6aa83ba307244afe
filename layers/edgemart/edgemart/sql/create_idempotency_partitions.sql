-- Creates the daily partitions of idempotency_keys covering [first_day, first_day + days) that
-- do not exist yet, and returns the names it created. Called by migration 0003 (the first
-- days) and by the maintenance job, which keeps a week ahead.
--
-- A new partition gets the parent's row-level security (enabled, forced, the tenant policy;
-- migration 0023): a partition queried by its own name answers by its own policies. It runs
-- as its owner (SECURITY DEFINER): the application role, which runs the maintenance job, owns
-- nothing, and only a table's owner can add partitions to it.

CREATE OR REPLACE FUNCTION create_idempotency_partitions(first_day date, days integer)
RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    day date;
    partition_name text;
    secured boolean;
BEGIN
    SELECT c.relrowsecurity INTO secured FROM pg_class c
    WHERE c.oid = 'idempotency_keys'::regclass;
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        partition_name := 'idempotency_keys_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF idempotency_keys FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            IF secured THEN
                EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY, '
                               'FORCE ROW LEVEL SECURITY', partition_name);
                EXECUTE format(
                    'CREATE POLICY tenant_isolation ON %I USING (tenant_id = '
                    'nullif(current_setting(''edgemart.tenant_id'', true), '''')::uuid) '
                    'WITH CHECK (tenant_id = '
                    'nullif(current_setting(''edgemart.tenant_id'', true), '''')::uuid)',
                    partition_name);
            END IF;
            RETURN NEXT partition_name;
        END IF;
    END LOOP;
END;
$$;
