-- Tenants: one marketplace each (docs/decisions/0040-tenancy.md). Platform tables, not
-- tenant-scoped themselves: a request's host is looked up here before any tenant is known.
-- The `default` tenant holds every row of a single-tenant install and of a database that
-- predates tenancy; its id is fixed so that code and column defaults can name it.

CREATE TABLE tenants (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug              text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{3,40}$' OR slug = 'default'),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- NULL: the deployment's PLATFORM_FEE_BASIS_POINTS.
    platform_fee_bps  integer CHECK (platform_fee_bps BETWEEN 0 AND 5000),
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- A host names at most one tenant: stored lower-case, without a port, matched exactly.
CREATE TABLE tenant_domains (
    domain      text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_domains_tenant_idx ON tenant_domains (tenant_id);

INSERT INTO tenants (id, slug, name)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default marketplace');
INSERT INTO tenant_domains (domain, tenant_id)
VALUES ('localhost', '00000000-0000-0000-0000-000000000001'),
       ('127.0.0.1', '00000000-0000-0000-0000-000000000001');
