-- Live updates on AWS (functions/realtime; docs/decisions/0045-websocket-subscriptions-store.md):
-- the API Gateway WebSocket API's open connections, and the channels each subscribes to. The
-- gateway keeps its sockets in memory instead; these tables serve only the WebSocket API,
-- whose every message may reach another Lambda environment.
--
-- live_connections is a directory of the platform's, like tenant_domains: a message names only
-- its connection id, and the connection's row says which tenant it connected to (its host at
-- $connect), so it is read before any tenant is set and has no row-level security. It holds no
-- marketplace data. live_subscriptions, each tenant's channels, is the tenant's own: row-level
-- security as on every tenant table (docs/decisions/0040).

CREATE TABLE live_connections (
    connection_id   text PRIMARY KEY CHECK (length(connection_id) BETWEEN 1 AND 128),
    tenant_id       uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001',
    client_ip       text NOT NULL,
    -- The buyer who authenticated on this connection (an `auth` message), if any.
    user_sub        text,
    -- Invalid frames in the current window: a flood closes the connection.
    invalid_frames  integer NOT NULL DEFAULT 0,
    invalid_since   timestamptz,
    connected_at    timestamptz NOT NULL DEFAULT now()
);
-- The per-client connection limit counts by address at $connect.
CREATE INDEX live_connections_client_ip_idx ON live_connections (client_ip);

-- Keyed by channel first: a committing function reads one channel's connections.
CREATE TABLE live_subscriptions (
    tenant_id       uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001',
    channel         text NOT NULL CHECK (channel ~ '^(order|product):[0-9a-f-]{36}$'),
    connection_id   text NOT NULL REFERENCES live_connections (connection_id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, channel, connection_id)
);
-- $disconnect and the per-connection subscription limit find a connection's rows.
CREATE INDEX live_subscriptions_connection_idx ON live_subscriptions (connection_id);

ALTER TABLE live_subscriptions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON live_subscriptions
    USING (tenant_id = nullif(current_setting('edgemart.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('edgemart.tenant_id', true), '')::uuid);
