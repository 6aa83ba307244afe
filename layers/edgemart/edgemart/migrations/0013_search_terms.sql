-- One-word searches by relevance from a ranked term index (bench/read_path/RESULTS.md).
--
-- Relevance orders matches by (round(ts_rank_cd(search_vector, query), 6),
-- listing_rank_score(quality_score), id), all descending. The GIN index finds the matches
-- but cannot order them, so a one-word query on a common word ('lamp': 31,000 of 1,000,000
-- products) ranked every match to keep 21. For a query that is one lexeme the rank depends
-- on the product alone, so it can be computed when the product is written: search_terms
-- holds one row per (lexeme, listed product) with both sort keys (product_terms()), and its
-- primary key is the relevance order within each lexeme. A page is then the next 21 index
-- entries.
--
-- Triggers on products keep it exact in the writing transaction (sql/search_terms_insert.sql,
-- sql/search_terms_change.sql, sql/search_terms_truncate.sql).
-- edgemart: requires product_terms

CREATE TABLE search_terms (
    lexeme      text    NOT NULL,
    rank        numeric NOT NULL,
    rank_score  numeric NOT NULL,
    product_id  uuid    NOT NULL,
    PRIMARY KEY (lexeme, rank, rank_score, product_id)
);

INSERT INTO search_terms
SELECT t.* FROM products p,
    LATERAL product_terms(p.id, p.search_vector, p.quality_score,
                          p.is_available AND p.is_approved) t;
