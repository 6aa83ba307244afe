-- The one lexeme of a one-operand query ('lamp' for websearch_to_tsquery('english', 'Lamps')),
-- else NULL: a one-word search by relevance walks search_terms under it. A single operand's
-- text form is a quoted lexeme, which tsvector input reads back.

CREATE OR REPLACE FUNCTION single_lexeme(q tsquery) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN numnode(q) = 1 AND q::text NOT LIKE '%:%'
                THEN (tsvector_to_array(q::text::tsvector))[1] END
$$;
