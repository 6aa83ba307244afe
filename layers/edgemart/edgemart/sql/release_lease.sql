-- Give up the lease `p_name` if `p_holder` holds it: it expires now, so the next caller of
-- acquire_lease() takes it (a process that stops cleanly hands over at once rather than after
-- its lease's time). The row stays, keeping the term. True when there was a lease to give up.
-- (PL/pgSQL: a function that writes is never inlined into its caller's plan.)

CREATE OR REPLACE FUNCTION release_lease(p_name text, p_holder text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE leases SET expires_at = clock_timestamp()
    WHERE name = p_name AND holder = p_holder AND expires_at > clock_timestamp();
    RETURN FOUND;
END;
$$;
