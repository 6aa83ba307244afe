-- A new tenant (POST /platform/tenants, and `edgemart serve --demo-tenants`), whole or not at
-- all, in one round trip: the tenant, its domains (lower-cased), a copy of the default
-- tenant's categories with ids of their own, its kill switches (off) and the audit row, the
-- last three in the new tenant's own rows. A slug or domain another tenant has is the
-- unique_violation of tenants or tenant_domains, for the caller to answer as a conflict.
-- The tenant is set (transaction-local) before each tenant's rows are read or written, so
-- row-level security admits them for the application's role too.
-- edgemart: requires tenant_json

CREATE OR REPLACE FUNCTION create_tenant(
    p_slug text,
    p_name text,
    p_domains text[],
    p_platform_fee_bps integer,
    p_actor text,
    p_request_id text
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    default_tenant constant uuid := '00000000-0000-0000-0000-000000000001';
    new_tenant tenants;
    categories_copied jsonb;
    switch_names text[];
BEGIN
    PERFORM set_config('edgemart.tenant_id', default_tenant::text, true);
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'slug', c.slug, 'name', c.name, 'icon', c.icon, 'color', c.color) ORDER BY c.id),
           '[]'::jsonb)
    INTO categories_copied
    FROM categories c WHERE c.tenant_id = default_tenant;
    SELECT coalesce(array_agg(k.name ORDER BY k.name), '{}')
    INTO switch_names
    FROM kill_switches k WHERE k.tenant_id = default_tenant;

    INSERT INTO tenants (slug, name, platform_fee_bps)
    VALUES (p_slug, p_name, p_platform_fee_bps)
    RETURNING * INTO new_tenant;
    INSERT INTO tenant_domains (domain, tenant_id)
    SELECT lower(d), new_tenant.id FROM unnest(p_domains) AS d;

    PERFORM set_config('edgemart.tenant_id', new_tenant.id::text, true);
    INSERT INTO categories (tenant_id, slug, name, icon, color)
    SELECT new_tenant.id, c.slug, c.name, c.icon, c.color
    FROM jsonb_to_recordset(categories_copied) AS c (slug text, name text, icon text, color text);
    INSERT INTO kill_switches (tenant_id, name)
    SELECT new_tenant.id, n FROM unnest(switch_names) AS n;
    INSERT INTO audit_log (tenant_id, actor_sub, action, entity_type, entity_id, details, request_id)
    VALUES (new_tenant.id, p_actor, 'tenant.create', 'tenant', new_tenant.id::text,
            jsonb_build_object('slug', p_slug, 'name', p_name,
                               'domains', (SELECT jsonb_agg(lower(d)) FROM unnest(p_domains) d),
                               'platform_fee_bps', p_platform_fee_bps),
            p_request_id);
    RETURN tenant_json(new_tenant);
END;
$$;
