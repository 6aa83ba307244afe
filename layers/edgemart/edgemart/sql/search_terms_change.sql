-- search_terms through an UPDATE or DELETE of a product: the old row's terms go, the new row's
-- come. The UPDATE trigger fires only when the text, the quality score or the listing status
-- changes: a purchase changes none of them and never fires it. Only listed products
-- (is_available AND is_approved) have terms; the store's is_active and the query's filters are
-- checked when reading, as on the GIN path. A product's terms are its tenant's.
-- edgemart: requires product_terms

CREATE OR REPLACE FUNCTION search_terms_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM search_terms s
        USING product_terms(OLD.id, OLD.search_vector, OLD.quality_score,
                            OLD.is_available AND OLD.is_approved) t
        WHERE (s.tenant_id, s.lexeme, s.rank, s.rank_score, s.product_id)
            = (OLD.tenant_id, t.lexeme, t.rank, t.rank_score, t.product_id);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO search_terms (tenant_id, lexeme, rank, rank_score, product_id)
        SELECT NEW.tenant_id, t.* FROM product_terms(NEW.id, NEW.search_vector, NEW.quality_score,
                                    NEW.is_available AND NEW.is_approved) t;
    END IF;
    RETURN NULL;
END;
$$;

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
