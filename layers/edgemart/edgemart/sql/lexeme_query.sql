-- A lexeme as a one-operand tsquery (tsquery input: quoted, '' and \ escaped).

CREATE OR REPLACE FUNCTION lexeme_query(lexeme text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
$$;
