-- The home page document, rendered by refresh_views right after it refreshes the views the
-- page is built from: the home function then reads one row instead of assembling ~30
-- products and every category on each cache miss. One row, id 1.
CREATE TABLE home_snapshot (
    id            smallint PRIMARY KEY CHECK (id = 1),
    document      json NOT NULL,
    generated_at  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
