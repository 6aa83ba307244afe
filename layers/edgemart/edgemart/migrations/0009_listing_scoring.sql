-- Listing scoring (docs/scoring.md): the state score_listings keeps on each pending listing,
-- the scorer's last run for /health, and ranking that places pending listings in the middle
-- (sql/listing_rank_score.sql; the home page's views rank by it too).
-- edgemart: requires listing_rank_score

-- score_attempts counts claims: it is raised when a run claims the listing, before scoring, so
-- a listing that crashes every run still runs out of attempts and gets the fallback score.
-- score_lease_until keeps a claimed listing away from other runs while one scores it; a run
-- that dies leaves a lease that simply expires. score_source says how the score was made:
-- 'model', 'heuristic' (the model was unavailable) or 'fallback' (scoring this listing failed
-- on every attempt: flagged for review).
ALTER TABLE products
    ADD COLUMN score_attempts     smallint NOT NULL DEFAULT 0 CHECK (score_attempts >= 0),
    ADD COLUMN score_lease_until  timestamptz,
    ADD COLUMN score_source       text CHECK (score_source IN ('model', 'heuristic', 'fallback')),
    ADD COLUMN scored_at          timestamptz;

-- The scorer's state after its last run: one row, id 1, read by /health.
CREATE TABLE scoring_status (
    id               smallint PRIMARY KEY CHECK (id = 1),
    scorer           text NOT NULL CHECK (scorer IN ('model', 'heuristic')),
    model_path       text NOT NULL,
    degraded_reason  text,
    last_run_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Top rated orders by listing_rank_score: the index stores its results, so it needs the
-- function before it is built, and a change of the function's body needs a migration that
-- reindexes (docs/decisions/0031-sql-definitions.md).
DROP INDEX products_top_rated_idx;
CREATE INDEX products_top_rated_idx ON products
    (listing_rank_score(quality_score) DESC, rating DESC NULLS LAST, id)
    WHERE is_available AND is_approved;
