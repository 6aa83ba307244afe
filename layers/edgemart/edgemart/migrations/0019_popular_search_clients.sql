-- Popular searches count distinct clients, not requests (docs/decisions/0004).
--
-- A query counts once per client per period (SEARCH_TRENDING_PERIOD_S): refresh_views
-- inserts each flushed (query, client hash) into popular_search_clients for the current
-- period, ON CONFLICT DO NOTHING, and adds to popular_searches only what was inserted. Only
-- the current period's rows are needed; older ones are deleted as periods pass. A client
-- hash is 128 bits of a keyed HMAC of the token subject or the IP address, never the address.
CREATE TABLE popular_search_clients (
    period_start  timestamptz NOT NULL,
    query         text NOT NULL CHECK (length(query) BETWEEN 1 AND 200),
    client_hash   text NOT NULL CHECK (client_hash ~ '^[0-9a-f]{32}$'),
    PRIMARY KEY (period_start, query, client_hash)
);

-- The most distinct clients the query had in any one period: the public list shows a query
-- only once this reaches POPULAR_SEARCH_MIN_CLIENTS.
ALTER TABLE popular_searches
    ADD COLUMN peak_clients bigint NOT NULL DEFAULT 0 CHECK (peak_clients >= 0);

-- The counts so far counted requests (one client could make a query popular): they start
-- again from zero in the new unit rather than rank beside it.
UPDATE popular_searches SET total_count = 0, current_count = 0, previous_count = 0;

-- The ranking stays answered from the index alone.
DROP INDEX popular_searches_ranking_idx;
CREATE INDEX popular_searches_ranking_idx ON popular_searches (total_count DESC, query)
    INCLUDE (current_count, previous_count, peak_clients);

-- Terms an admin hid from the public list (PUT /admin/popular-searches/hidden); their
-- counting goes on. Unhiding deletes the row.
CREATE TABLE hidden_searches (
    query       text PRIMARY KEY CHECK (length(query) BETWEEN 1 AND 200),
    reason      text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    hidden_by   text NOT NULL,
    hidden_at   timestamptz NOT NULL DEFAULT now()
);
