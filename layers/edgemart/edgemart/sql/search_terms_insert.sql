-- search_terms stays exactly what the products say, kept by triggers in the writing
-- transaction. Inserts: one statement-level trigger, set-wise, so a bulk load (COPY, the demo
-- seed) stays one statement. A product's terms are its tenant's (docs/decisions/0040).
-- edgemart: requires product_terms

CREATE OR REPLACE FUNCTION search_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_terms (tenant_id, lexeme, rank, rank_score, product_id)
    SELECT p.tenant_id, t.* FROM inserted p,
        LATERAL product_terms(p.id, p.search_vector, p.quality_score,
                              p.is_available AND p.is_approved) t;
    RETURN NULL;
END;
$$;

CREATE TRIGGER search_terms_insert AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION search_terms_insert();
