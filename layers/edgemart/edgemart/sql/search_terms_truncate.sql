-- search_terms through a TRUNCATE of products: nothing is left to have terms.

CREATE OR REPLACE FUNCTION search_terms_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE search_terms;
    RETURN NULL;
END;
$$;

CREATE TRIGGER search_terms_truncate AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION search_terms_truncate();
