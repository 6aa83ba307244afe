-- Take or renew the lease `p_name` for `p_holder`, for `p_ttl` from now by the database's
-- clock (docs/decisions/0033-scheduler-leader.md). One conditional upsert: it succeeds when
-- nobody holds the lease, when `p_holder` holds it (a renewal, even one arriving after it
-- expired, if nobody took it meanwhile), or when it has expired; concurrent callers are
-- serialised on the row, so at most one of them gets an expired lease.
--
-- Returns one row: `held` (the caller holds the lease now), the lease's `term` (raised when
-- the lease is taken rather than renewed by its unexpired holder), its `holder` and the
-- seconds until it expires (`expires_in`), so a refused caller can try again as it ends.
-- The clock is read once: the expiry it writes is no earlier than the caller's request was
-- sent, which is what lets the holder count its own deadline from that moment.

CREATE OR REPLACE FUNCTION acquire_lease(p_name text, p_holder text, p_ttl interval)
RETURNS TABLE (held boolean, term bigint, holder text, expires_in double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH taken AS (
        INSERT INTO leases AS l (name, holder, term, acquired_at, renewed_at, expires_at)
        VALUES (p_name, p_holder, 1, v_now, v_now, v_now + p_ttl)
        ON CONFLICT (name) DO UPDATE
        SET holder = excluded.holder,
            term = CASE WHEN l.holder = excluded.holder AND l.expires_at > v_now
                        THEN l.term ELSE l.term + 1 END,
            acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > v_now
                               THEN l.acquired_at ELSE v_now END,
            renewed_at = v_now,
            expires_at = v_now + p_ttl
        WHERE l.holder = excluded.holder OR l.expires_at <= v_now
        RETURNING l.term, l.holder, l.expires_at
    )
    SELECT true, t.term, t.holder, extract(epoch FROM t.expires_at - v_now)::float8 FROM taken t;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Refused: who holds it, and for how long yet (read afresh, after the holder's
    -- concurrent renewal if there was one).
    RETURN QUERY
    SELECT false, l.term, l.holder, extract(epoch FROM l.expires_at - clock_timestamp())::float8
    FROM leases l WHERE l.name = p_name;
END;
$$;
