-- edgemart: no-transaction
-- edgemart: requires current_tenant_id, refresh_home_lists
-- Tenancy in the database (docs/decisions/0040-tenancy-in-the-database.md): every
-- tenant-scoped table gets tenant_id, leading its primary key and every foreign key that stays
-- inside a tenant; unique keys are scoped by tenant; row-level security, enabled and forced,
-- shows a transaction only the rows of the tenant it set; the application's group role
-- edgemart_app owns nothing. Every existing row lands in `default`.
--
-- Written to run on a populated, live database (the purchase path keeps running):
-- - ADD COLUMN with a constant default is a catalog change (no rewrite); the default then
--   becomes current_tenant_id(), again only a catalog change.
-- - Every new unique index is built CONCURRENTLY, then swapped in under lock_timeout: a swap
--   waits at most 500 ms in the lock queue (the application waits behind it no longer), and
--   the runner tries it again rather than fail (edgemart.migrate), as it does a step that
--   lost a deadlock to a purchase (adding payouts' key to orders locks them in the opposite
--   order to a purchase).
-- - New foreign keys are added NOT VALID (a moment's lock), then VALIDATEd, which reads the
--   rows under a lock that lets writes go on.
-- - idempotency_keys is partitioned: its new key is built CONCURRENTLY per partition here, and
--   0024 swaps it in (one transaction, since a partitioned key changes with all its parts).
-- Every statement is safe to run again: the guarded steps (execute-results) check the catalog.
--
-- Not tenant-scoped: tenants, tenant_domains (a host is looked up before a tenant is known),
-- leases and schedule_runs (the fleet's scheduler), schema_* (the runner), scoring_status
-- (the deployment's scorer: which model file loaded, read by /health on any host).
-- search_terms, category_counts and home_products are derived (triggers, refresh_views) and
-- carry the tenant of the rows they derive from, with no key to tenants of their own; orders
-- and payouts reach tenants through their in-tenant keys, so a purchase pays no extra key
-- check. idempotency_keys has none: PostgreSQL 15 cannot add a NOT VALID key to a partitioned
-- table, and a checked one would lock out purchases while it read every partition.

-- edgemart: execute-results
SELECT 'CREATE ROLE edgemart_app NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edgemart_app');

SET lock_timeout = '500ms';

-- edgemart: execute-results
SELECT format('ALTER TABLE %I ADD COLUMN tenant_id uuid NOT NULL '
              'DEFAULT ''00000000-0000-0000-0000-000000000001''', t)
FROM unnest(ARRAY['categories', 'stores', 'products', 'wallets', 'orders', 'payouts',
                  'audit_log', 'failed_transactions', 'idempotency_keys', 'search_history',
                  'popular_searches', 'popular_search_clients', 'hidden_searches',
                  'kill_switches', 'home_snapshot', 'search_terms']) AS t
WHERE NOT EXISTS (SELECT FROM pg_attribute a
                  WHERE a.attrelid = t::regclass AND a.attname = 'tenant_id');

-- edgemart: execute-results
SELECT format('ALTER TABLE %I ALTER COLUMN tenant_id SET DEFAULT current_tenant_id()', t)
FROM unnest(ARRAY['categories', 'stores', 'products', 'wallets', 'orders', 'payouts',
                  'audit_log', 'failed_transactions', 'idempotency_keys', 'search_history',
                  'popular_searches', 'popular_search_clients', 'hidden_searches',
                  'kill_switches', 'home_snapshot', 'search_terms']) AS t;

-- The home page's lists, per tenant: plain tables that refresh_views rebuilds one tenant at a
-- time (sql/refresh_home_lists.sql), where the materialized views they replace could only be
-- refreshed whole, by their owner.
CREATE TABLE IF NOT EXISTS category_counts (
    tenant_id           uuid NOT NULL DEFAULT current_tenant_id(),
    id                  integer NOT NULL,
    slug                text NOT NULL,
    name                text NOT NULL,
    icon                text NOT NULL,
    color               text NOT NULL,
    product_count       bigint NOT NULL,
    median_price_cents  bigint,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS home_products (
    tenant_id      uuid NOT NULL DEFAULT current_tenant_id(),
    id             uuid NOT NULL,
    name           text NOT NULL,
    price_cents    bigint NOT NULL,
    currency       char(3) NOT NULL,
    store_slug     text NOT NULL,
    store_name     text NOT NULL,
    category_id    integer NOT NULL,
    sold_count     integer NOT NULL,
    rating         numeric(3, 2),
    quality_score  real,
    stock          integer NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

RESET lock_timeout;

-- A build a crash interrupted leaves an invalid index that IF NOT EXISTS would keep: drop it.
-- edgemart: execute-results
SELECT format('DROP INDEX CONCURRENTLY %I', c.relname)
FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
WHERE NOT i.indisvalid AND c.relname LIKE '%tenant%'
  AND c.relnamespace = current_schema()::regnamespace;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS categories_tenant_pkey
    ON categories (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS categories_tenant_slug_key
    ON categories (tenant_id, slug);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS stores_tenant_pkey ON stores (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS stores_tenant_slug_key ON stores (tenant_id, slug);
-- Product and store ids (gen_random_uuid) stay unique alone as well: a lookup by id is one
-- index probe whoever asks, the owner included, whom row-level security adds no tenant to.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS stores_id_key ON stores (id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_tenant_pkey ON products (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_id_key ON products (id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS wallets_tenant_pkey
    ON wallets (tenant_id, user_sub);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS orders_tenant_pkey ON orders (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS payouts_tenant_pkey ON payouts (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS payouts_tenant_order_id_key
    ON payouts (tenant_id, order_id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS audit_log_tenant_pkey ON audit_log (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS failed_transactions_tenant_pkey
    ON failed_transactions (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS search_history_tenant_pkey
    ON search_history (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS popular_searches_tenant_pkey
    ON popular_searches (tenant_id, query);
CREATE INDEX CONCURRENTLY IF NOT EXISTS popular_searches_tenant_ranking_idx
    ON popular_searches (tenant_id, total_count DESC, query)
    INCLUDE (current_count, previous_count, peak_clients);
DROP INDEX CONCURRENTLY IF EXISTS popular_searches_ranking_idx;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS popular_search_clients_tenant_pkey
    ON popular_search_clients (tenant_id, period_start, query, client_hash);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS hidden_searches_tenant_pkey
    ON hidden_searches (tenant_id, query);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS kill_switches_tenant_pkey
    ON kill_switches (tenant_id, name);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS home_snapshot_tenant_pkey
    ON home_snapshot (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS search_terms_tenant_pkey
    ON search_terms (tenant_id, lexeme, rank, rank_score, product_id);

-- idempotency_keys: no index can be built CONCURRENTLY on a partitioned table, so each
-- partition gets its part of the new key; 0024 makes them the key.
-- edgemart: execute-results
SELECT format('CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS %I ON %I '
              '(tenant_id, key, created_at, user_sub)', c.relname || '_tenant_pkey', c.relname)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'idempotency_keys'::regclass
ORDER BY c.relname;

SET lock_timeout = '500ms';

-- The new keys, NOT VALID: a moment's lock, no scan.
-- edgemart: execute-results
SELECT format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY %s REFERENCES %s%s NOT VALID',
              t, name, cols, target, deferral)
FROM (VALUES
    ('products', 'products_tenant_store_fkey', '(tenant_id, store_id)', 'stores (tenant_id, id)', ''),
    ('products', 'products_tenant_category_fkey', '(tenant_id, category_id)',
     'categories (tenant_id, id)', ''),
    -- Checked at COMMIT, as before (migration 0011).
    ('categories', 'categories_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('stores', 'stores_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('wallets', 'wallets_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('audit_log', 'audit_log_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('failed_transactions', 'failed_transactions_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('search_history', 'search_history_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('popular_searches', 'popular_searches_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('popular_search_clients', 'popular_search_clients_tenant_id_fkey', '(tenant_id)',
     'tenants (id)', ''),
    ('hidden_searches', 'hidden_searches_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('kill_switches', 'kill_switches_tenant_id_fkey', '(tenant_id)', 'tenants (id)', ''),
    ('home_snapshot', 'home_snapshot_tenant_id_fkey', '(tenant_id)', 'tenants (id)', '')
) AS fk (t, name, cols, target, deferral)
WHERE NOT EXISTS (SELECT FROM pg_constraint c
                  WHERE c.conrelid = fk.t::regclass AND c.conname = fk.name);

-- The keys between the tables a purchase writes, their locks taken in the order a purchase
-- takes the locks they conflict with: in another order, a purchase holding one and waiting
-- for the other would make each try wait out its lock_timeout. A key's SHARE ROW EXCLUSIVE
-- conflicts with a purchase's writes, which take orders (then payouts) before products (the
-- stock UPDATE is last): orders first. Dropping a key below (ACCESS EXCLUSIVE) also conflicts
-- with a purchase's first read, of products: products first there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'orders'::regclass AND conname = 'orders_tenant_store_fkey') THEN
        LOCK TABLE orders, products, stores IN SHARE ROW EXCLUSIVE MODE;
        -- Checked at COMMIT, as before (migration 0011).
        ALTER TABLE orders
            ADD CONSTRAINT orders_tenant_product_fkey FOREIGN KEY (tenant_id, product_id)
                REFERENCES products (tenant_id, id) DEFERRABLE INITIALLY DEFERRED NOT VALID,
            ADD CONSTRAINT orders_tenant_store_fkey FOREIGN KEY (tenant_id, store_id)
                REFERENCES stores (tenant_id, id) DEFERRABLE INITIALLY DEFERRED NOT VALID;
    END IF;
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'payouts'::regclass AND conname = 'payouts_tenant_order_fkey') THEN
        LOCK TABLE orders, payouts IN SHARE ROW EXCLUSIVE MODE;
        ALTER TABLE payouts ADD CONSTRAINT payouts_tenant_order_fkey
            FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id) NOT VALID;
    END IF;
END;
$$;

RESET lock_timeout;

-- Checked now, under a lock that lets reads and writes go on (no-ops once valid).
-- edgemart: execute-results
SELECT format('ALTER TABLE %s VALIDATE CONSTRAINT %I', c.conrelid::regclass, c.conname)
FROM pg_constraint c
WHERE c.contype = 'f' AND NOT c.convalidated
  AND c.connamespace = current_schema()::regnamespace
ORDER BY c.conname;

SET lock_timeout = '500ms';

-- The home page's materialized views go (category_counts and home_products replace them,
-- filled at the end of this file): one's GROUP BY leans on categories' old key. A process
-- deployed before this migration reads the snapshot the home page kept, and its
-- refresh_views run fails until it is replaced.
DROP MATERIALIZED VIEW IF EXISTS mv_category_counts;
DROP MATERIALIZED VIEW IF EXISTS mv_hot_products;

-- The old keys go (products first, see above); the new ones take their place, one table at
-- a time.
DO $$
BEGIN
    LOCK TABLE products, stores, categories IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE products DROP CONSTRAINT IF EXISTS products_store_id_fkey,
        DROP CONSTRAINT IF EXISTS products_category_id_fkey;
END;
$$;

DO $$
BEGIN
    LOCK TABLE products, stores, orders IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_product_id_fkey,
        DROP CONSTRAINT IF EXISTS orders_store_id_fkey;
END;
$$;

DO $$
BEGIN
    LOCK TABLE orders, payouts IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE payouts DROP CONSTRAINT IF EXISTS payouts_order_id_fkey;
END;
$$;

-- edgemart: execute-results
SELECT format('ALTER TABLE %I DROP CONSTRAINT %I, '
              'ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I%s',
              t, t || '_pkey', t || '_tenant_pkey', t || '_tenant_pkey', coalesce(also, ''))
FROM (VALUES
    ('categories', ', DROP CONSTRAINT categories_slug_key, ADD CONSTRAINT '
                   'categories_tenant_slug_key UNIQUE USING INDEX categories_tenant_slug_key'),
    ('stores', ', DROP CONSTRAINT stores_slug_key, ADD CONSTRAINT stores_tenant_slug_key '
               'UNIQUE USING INDEX stores_tenant_slug_key'),
    ('products', NULL),
    ('wallets', NULL),
    ('orders', NULL),
    ('payouts', ', DROP CONSTRAINT payouts_order_id_key, ADD CONSTRAINT '
                'payouts_tenant_order_id_key UNIQUE USING INDEX payouts_tenant_order_id_key'),
    ('audit_log', NULL),
    ('failed_transactions', NULL),
    ('search_history', NULL),
    ('popular_searches', NULL),
    ('popular_search_clients', NULL),
    ('hidden_searches', NULL),
    ('kill_switches', NULL),
    ('home_snapshot', NULL),
    ('search_terms', NULL)
) AS swap (t, also)
WHERE NOT EXISTS (SELECT FROM pg_constraint c
                  WHERE c.conrelid = swap.t::regclass AND c.conname = swap.t || '_tenant_pkey');

-- Row-level security on every table with a tenant_id but tenant_domains (a platform table),
-- partitions included (a partition queried by name answers by its own policies).
-- edgemart: execute-results
SELECT format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', c.oid::regclass)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
  AND c.relname <> 'tenant_domains' AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
ORDER BY c.relname;

-- edgemart: execute-results
SELECT format('CREATE POLICY tenant_isolation ON %s '
              'USING (tenant_id = nullif(current_setting(''edgemart.tenant_id'', true), '''')::uuid) '
              'WITH CHECK (tenant_id = nullif(current_setting(''edgemart.tenant_id'', true), '''')::uuid)',
              c.oid::regclass)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
  AND c.relname <> 'tenant_domains'
  AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid)
ORDER BY c.relname;

RESET lock_timeout;

-- The application's group role: what it reads and writes, never what it owns. The runner's
-- role (the owner) grants the same on what later migrations create (default privileges).
-- edgemart: execute-results
SELECT format(statement, current_schema())
FROM unnest(ARRAY[
    'GRANT USAGE ON SCHEMA %I TO edgemart_app',
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO edgemart_app',
    'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO edgemart_app',
    'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO edgemart_app',
    'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO edgemart_app'
]) AS statement;

-- The audit log is appended to; the runner's history is read (pending migrations).
REVOKE UPDATE, DELETE ON audit_log FROM edgemart_app;
REVOKE INSERT, UPDATE, DELETE ON schema_migrations, schema_definitions FROM edgemart_app;

-- The home lists of every tenant, built once now rather than at refresh_views' next run.
SELECT refresh_home_lists(id) FROM tenants ORDER BY id;
