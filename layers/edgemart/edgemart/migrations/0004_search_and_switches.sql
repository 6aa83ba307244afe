-- Search history, popular searches, kill switches.

CREATE TABLE search_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_sub    text NOT NULL,
    query       text NOT NULL CHECK (length(query) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_history_user_created_idx ON search_history (user_sub, created_at DESC);
CREATE INDEX search_history_created_idx ON search_history (created_at);

-- Counts are buffered by the search function and flushed by refresh_views; `current_count`
-- and `previous_count` are the two most recent periods, compared to mark trending queries.
CREATE TABLE popular_searches (
    query           text PRIMARY KEY CHECK (length(query) BETWEEN 1 AND 200),
    total_count     bigint NOT NULL DEFAULT 0 CHECK (total_count >= 0),
    current_count   bigint NOT NULL DEFAULT 0 CHECK (current_count >= 0),
    previous_count  bigint NOT NULL DEFAULT 0 CHECK (previous_count >= 0),
    period_start    timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Covering index: the ranking is answered from the index alone.
CREATE INDEX popular_searches_ranking_idx ON popular_searches (total_count DESC)
    INCLUDE (query, current_count, previous_count);

CREATE TABLE kill_switches (
    name            text PRIMARY KEY CHECK (name IN ('purchases', 'listings')),
    enabled         boolean NOT NULL DEFAULT false,
    reason          text NOT NULL DEFAULT '',
    changed_by      text,
    changed_at      timestamptz,
    cooldown_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO kill_switches (name) VALUES ('purchases'), ('listings');
