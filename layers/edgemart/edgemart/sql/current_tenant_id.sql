-- The tenant a row is written for when the writer names none: the one the transaction set
-- (`edgemart.tenancy.in_tenant`, or a whole-operation function's p_tenant), else `default`.
-- Every tenant-scoped table's tenant_id defaults to it (migration 0023), so the owner's
-- writes without a tenant (migrations, fixtures, the demo catalog) land in `default`, and code
-- written before tenancy keeps writing where it always did. The application role gains
-- nothing from the fallback: row-level security refuses a row whose tenant is not the one set.
--
-- After a transaction that set the tenant ends, current_setting() answers '' (not NULL) for
-- the rest of the session: NULLIF, always. The policies use the same expression without the
-- fallback (no tenant set: no rows).

CREATE OR REPLACE FUNCTION current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('edgemart.tenant_id', true), '')::uuid,
                    '00000000-0000-0000-0000-000000000001'::uuid)
$$;
