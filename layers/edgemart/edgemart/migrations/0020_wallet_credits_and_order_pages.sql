-- The index a buyer's order pages walk (docs/decisions/0007-replays-and-credits.md); wallet
-- credits under an Idempotency-Key came with it, as functions (sql/credit_wallet.sql,
-- sql/claim_idempotency_key.sql).
--
-- GET /purchases pages a buyer's orders newest first by (created_at, id). The index on
-- (user_sub, created_at DESC) could not break ties between orders of one instant, so a page
-- boundary between two of them needed a sort of every order at that instant; this one ends
-- with the id, serves `(created_at, id) < (cursor)` as an index condition scanned backwards,
-- and replaces the old index (it serves every query that one did), so a purchase writes no
-- extra index entry.

CREATE INDEX orders_user_created_id_idx ON orders (user_sub, created_at, id);
DROP INDEX orders_user_created_idx;
