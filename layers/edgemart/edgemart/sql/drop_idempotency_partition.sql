-- Drops one partition of idempotency_keys, by name, for the maintenance job (which decides
-- which have expired); false when there is no such partition. It runs as the table's owner
-- (SECURITY DEFINER), since only an owner can drop a table and the application role owns
-- nothing, and it drops nothing but a partition of idempotency_keys.

CREATE OR REPLACE FUNCTION drop_idempotency_partition(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'idempotency_keys'::regclass AND c.relname = p_name) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', p_name);
    RETURN true;
END;
$$;
