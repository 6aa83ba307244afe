-- A tenant as the platform routes answer it (POST, GET /platform/tenants..., PUT .../domains):
-- its domains sorted, so the same tenant always reads the same.

CREATE OR REPLACE FUNCTION tenant_json(t tenants) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'slug', t.slug, 'name', t.name,
        'domains', (SELECT coalesce(jsonb_agg(d.domain ORDER BY d.domain), '[]'::jsonb)
                    FROM tenant_domains d WHERE d.tenant_id = t.id),
        'platform_fee_bps', t.platform_fee_bps,
        'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;
