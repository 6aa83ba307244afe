-- The purchase as one server-side function, purchase() (sql/purchase.sql), and the index its
-- key lookups walked. Migration 0014 replaced this index with idempotency_keys' primary key.

CREATE INDEX idempotency_keys_key_idx ON idempotency_keys (key, created_at);
