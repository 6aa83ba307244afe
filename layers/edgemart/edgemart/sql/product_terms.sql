-- The search_terms rows of a product (migration 0013 holds the table and why it exists): one
-- per lexeme of a listed product, with the very keys the search's relevance sort uses,
-- (round(ts_rank_cd(search_vector, query), 6), listing_rank_score(quality_score)). An unlisted
-- product has none.
-- edgemart: requires lexeme_query, listing_rank_score

CREATE OR REPLACE FUNCTION product_terms(
    p_id uuid, p_vector tsvector, p_quality real, p_listed boolean
) RETURNS TABLE (lexeme text, rank numeric, rank_score numeric, product_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT t.lexeme,
           round(ts_rank_cd(p_vector, lexeme_query(t.lexeme))::numeric, 6),
           listing_rank_score(p_quality)::numeric,
           p_id
    FROM unnest(tsvector_to_array(p_vector)) AS t (lexeme)
    WHERE p_listed
$$;
