-- idempotency_keys' primary key leads with the tenant (docs/decisions/0040): (tenant_id, key,
-- created_at, user_sub). 0023 built each partition's part of it CONCURRENTLY; here, in one
-- short transaction, each part becomes its partition's key and the parent's key is declared
-- over them (PostgreSQL attaches the partitions' keys rather than build anything). A partition
-- created since then has its key built here: it is empty, being ahead of time.
--
-- lock_timeout: should a transaction hold the table, the attempt gives up within 500 ms
-- instead of queueing purchases behind it longer, and the runner tries it again.

SET LOCAL lock_timeout = '500ms';

DO $$
DECLARE
    part text;
BEGIN
    IF EXISTS (SELECT FROM pg_constraint
               WHERE conrelid = 'idempotency_keys'::regclass
                 AND conname = 'idempotency_keys_tenant_pkey') THEN
        RETURN;
    END IF;
    ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'idempotency_keys'::regclass ORDER BY c.relname
    LOOP
        IF to_regclass(part || '_tenant_pkey') IS NULL THEN
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I (tenant_id, key, created_at, user_sub)',
                           part || '_tenant_pkey', part);
        END IF;
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I',
                       part, part || '_tenant_pkey', part || '_tenant_pkey');
    END LOOP;
    ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_tenant_pkey
        PRIMARY KEY (tenant_id, key, created_at, user_sub);
END;
$$;
