-- The lexemes whose search_terms entries hold every product a query can match, chosen so
-- that they hold few: for an AND of words, the rarest word alone; for an OR, one rare word of
-- each branch. A search run under row-level security finds its candidates through them
-- (text equality on search_terms' key, which PostgreSQL lets be an index condition under a
-- policy, where `tsvector @@ tsquery` is not leakproof and cannot be: docs/decisions/0046),
-- then checks the whole query with `@@` on those products only. search_terms holds every
-- listed product's lexemes, and every search asks for listed products.
--
-- Why it is exact. querytree() is the query without its negations, a query every match of
-- the whole one also matches. With its phrase operators made ANDs (a phrase's words are all
-- in each match) it is monotone: a document that matches still matches with more lexemes.
-- So the lexemes C cover the query when a document holding all of the query's lexemes but
-- C does not match; the loop drops the most common lexemes first while that stays true.
-- Rarity is each lexeme's entries in the transaction's tenant, counted up to 10,000.
--
-- A query with a prefix (`lamp:*`) or weight (`lamp:A`) operand, or no word to find (the
-- search refuses those first), has no cover here: an error, never a wrong answer.
-- websearch_to_tsquery writes neither.
-- edgemart: requires current_tenant_id

CREATE OR REPLACE FUNCTION search_cover(q tsquery) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    -- A quoted lexeme (tsquery text doubles ' and \) with any suffix, a phrase operator, &, |,
    -- parentheses, ! (never in a querytree) and T (its "matches anything").
    token_pattern CONSTANT text := $re$'(?:[^'\\]|''|\\.)*'(?::[*A-Za-z]+)?|<(?:-|[0-9]+)>|[&|!()T]$re$;
    positive text := querytree(q);
    tokens text[];
    lexemes text[];
    relaxed tsquery;
    cover text[];
    word text;
    counts integer[] := '{}';
    entries integer;
    fewest integer := 10000;
BEGIN
    tokens := ARRAY(SELECT m.token[1]
                    FROM regexp_matches(positive, token_pattern, 'g') WITH ORDINALITY
                         AS m (token, n)
                    ORDER BY m.n);
    IF btrim(regexp_replace(positive, token_pattern, '', 'g')) <> ''
       OR EXISTS (SELECT FROM unnest(tokens) AS t (token)
                  WHERE t.token IN ('!', 'T')
                     OR (t.token LIKE '''%' AND t.token NOT LIKE '%''')) THEN
        RAISE EXCEPTION 'search_cover: no cover for %', q::text;
    END IF;
    lexemes := ARRAY(SELECT DISTINCT (tsvector_to_array(t.token::tsvector))[1]
                     FROM unnest(tokens) AS t (token) WHERE t.token LIKE '''%');
    relaxed := array_to_string(ARRAY(SELECT CASE WHEN t.token LIKE '<%' THEN '&' ELSE t.token END
                                     FROM unnest(tokens) WITH ORDINALITY AS t (token, n)
                                     ORDER BY t.n), ' ')::tsquery;
    -- Each lexeme's entries, counted only past the fewest found so far (a count of fewest + 1
    -- says "more common"), so the counting costs little more than the rarest lexeme's entries.
    FOREACH word IN ARRAY lexemes LOOP
        SELECT count(*) INTO entries
        FROM (SELECT FROM search_terms s
              WHERE s.tenant_id = current_tenant_id() AND s.lexeme = word
              LIMIT fewest + 1) e;
        counts := counts || entries;
        fewest := least(fewest, entries);
    END LOOP;
    cover := lexemes;
    FOR word IN
        SELECT l.lexeme FROM unnest(lexemes, counts) AS l (lexeme, entries)
        ORDER BY l.entries DESC, l.lexeme
    LOOP
        IF NOT array_to_tsvector(ARRAY(SELECT unnest(lexemes)
                                       EXCEPT SELECT unnest(array_remove(cover, word))))
               @@ relaxed THEN
            cover := array_remove(cover, word);
        END IF;
    END LOOP;
    RETURN cover;
END;
$$;
