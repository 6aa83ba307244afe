-- One-word searches by relevance from a ranked term index (bench/read_path/RESULTS.md).
--
-- Relevance orders matches by (round(ts_rank_cd(search_vector, query), 6),
-- listing_rank_score(quality_score), id), all descending. The GIN index finds the matches
-- but cannot order them, so a one-word query on a common word ('lamp': 31,000 of 1,000,000
-- products) ranked every match to keep 21. For a query that is one lexeme the rank depends
-- on the product alone, so it can be computed when the product is written: search_terms
-- holds one row per (lexeme, listed product) with both sort keys, and its primary key is
-- the relevance order within each lexeme. A page is then the next 21 index entries.
--
-- Kept exact by triggers on products, in the writing transaction: a statement-level INSERT
-- trigger (set-wise, so bulk loads stay one statement), a row-level UPDATE trigger that fires
-- only when the text, the quality score or the listing status changes (a purchase changes
-- none of them and never fires it), DELETE and TRUNCATE. Only listed products
-- (is_available AND is_approved) have terms; the store's is_active and the query's filters
-- are checked when reading, as on the GIN path.

CREATE TABLE search_terms (
    lexeme      text    NOT NULL,
    rank        numeric NOT NULL,
    rank_score  numeric NOT NULL,
    product_id  uuid    NOT NULL,
    PRIMARY KEY (lexeme, rank, rank_score, product_id)
);

-- The one lexeme of a one-operand query ('lamp' for websearch_to_tsquery('english', 'Lamps')),
-- else NULL. A single operand's text form is a quoted lexeme, which tsvector input reads back.
CREATE FUNCTION single_lexeme(q tsquery) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN numnode(q) = 1 AND q::text NOT LIKE '%:%'
                THEN (tsvector_to_array(q::text::tsvector))[1] END
$$;

-- A lexeme as a one-operand tsquery (tsquery input: quoted, '' and \ escaped).
CREATE FUNCTION lexeme_query(lexeme text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
$$;

-- The search_terms rows of products, with the very keys the search's relevance sort uses.
CREATE FUNCTION product_terms(
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

CREATE FUNCTION search_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_terms
    SELECT t.* FROM inserted p,
        LATERAL product_terms(p.id, p.search_vector, p.quality_score,
                              p.is_available AND p.is_approved) t;
    RETURN NULL;
END;
$$;

CREATE FUNCTION search_terms_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM search_terms s
        USING product_terms(OLD.id, OLD.search_vector, OLD.quality_score,
                            OLD.is_available AND OLD.is_approved) t
        WHERE (s.lexeme, s.rank, s.rank_score, s.product_id)
            = (t.lexeme, t.rank, t.rank_score, t.product_id);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO search_terms
        SELECT * FROM product_terms(NEW.id, NEW.search_vector, NEW.quality_score,
                                    NEW.is_available AND NEW.is_approved);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION search_terms_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE search_terms;
    RETURN NULL;
END;
$$;

CREATE TRIGGER search_terms_insert AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION search_terms_insert();
CREATE TRIGGER search_terms_update
    AFTER UPDATE OF name, description, quality_score, is_available, is_approved ON products
    FOR EACH ROW
    WHEN (OLD.search_vector IS DISTINCT FROM NEW.search_vector
          OR OLD.quality_score IS DISTINCT FROM NEW.quality_score
          OR OLD.is_available <> NEW.is_available
          OR OLD.is_approved <> NEW.is_approved)
    EXECUTE FUNCTION search_terms_change();
CREATE TRIGGER search_terms_delete AFTER DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION search_terms_change();
CREATE TRIGGER search_terms_truncate AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION search_terms_truncate();

INSERT INTO search_terms
SELECT t.* FROM products p,
    LATERAL product_terms(p.id, p.search_vector, p.quality_score,
                          p.is_available AND p.is_approved) t;
