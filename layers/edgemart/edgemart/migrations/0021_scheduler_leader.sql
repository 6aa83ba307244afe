-- Leases: one row per thing of which one process at a time is in charge, held for a while
-- and renewed by its holder (docs/decisions/0033-scheduler-leader.md). The gateway's
-- scheduler is the first: of every gateway process on this database, the holder of the
-- 'scheduler' lease runs the scheduled jobs. Taken, renewed and given up through
-- sql/acquire_lease.sql and sql/release_lease.sql, one statement each, so it works through a
-- transaction pooler; every time in it is the database's clock.
CREATE TABLE leases (
    name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    holder       text NOT NULL CHECK (length(holder) BETWEEN 1 AND 200),
    -- Goes up by one each time the lease is taken rather than renewed (another holder, or the
    -- same after it had expired): a holder's term names one unbroken tenure.
    term         bigint NOT NULL CHECK (term >= 1),
    acquired_at  timestamptz NOT NULL,
    renewed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    CHECK (acquired_at <= renewed_at)
);

-- When each of the gateway's leader-only schedules last started a run, by the database's
-- clock, written by the leader as each run starts: a process that takes the lead runs each
-- job when its interval since the fleet's last run is up, not one interval after it took
-- over, so a job keeps its period across changes of leader.
CREATE TABLE schedule_runs (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    started_at  timestamptz NOT NULL
);
