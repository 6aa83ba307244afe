-- A pending listing (no quality score yet) ranks as an average one (50 of 100): below
-- well-scored listings, above poor ones; never first, never hidden. Search tie-breaks, the
-- top-rated home list and search_terms use the same rule.
--
-- The index products_top_rated_idx (migration 0009) stores this function's results: replacing
-- it does not rebuild that index, so the runner refuses a changed body unless a migration that
-- declares `-- edgemart: requires listing_rank_score` applies it and then reindexes.

CREATE OR REPLACE FUNCTION listing_rank_score(quality_score real) RETURNS real
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(quality_score, 50);
