-- Money: wallets, orders, payouts, the append-only audit log and failed transactions.
-- audit_log is kept append-only by the triggers of sql/audit_log_is_append_only.sql.
-- Amounts are integer cents; the CHECKs are the last line of defence behind the code.

CREATE TABLE wallets (
    user_sub       text PRIMARY KEY CHECK (length(user_sub) BETWEEN 1 AND 255),
    balance_cents  bigint NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
    currency       char(3) NOT NULL DEFAULT 'USD',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_sub          text NOT NULL,
    product_id        uuid NOT NULL REFERENCES products (id),
    store_id          uuid NOT NULL REFERENCES stores (id),
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 10),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents > 0),
    total_cents       bigint NOT NULL CHECK (total_cents = unit_price_cents * quantity),
    currency          char(3) NOT NULL DEFAULT 'USD',
    status            text NOT NULL CHECK (status IN ('completed', 'queued', 'failed')),
    failure_code      text,
    idempotency_key   text,
    request_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'failed') = (failure_code IS NOT NULL))
);
CREATE INDEX orders_user_created_idx ON orders (user_sub, created_at DESC);
CREATE INDEX orders_product_queued_idx ON orders (product_id, created_at)
    WHERE status = 'queued';

CREATE TABLE payouts (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id      uuid NOT NULL UNIQUE REFERENCES orders (id),
    store_id      uuid NOT NULL REFERENCES stores (id),
    amount_cents  bigint NOT NULL CHECK (amount_cents >= 0),
    fee_cents     bigint NOT NULL CHECK (fee_cents >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payouts_store_created_idx ON payouts (store_id, created_at DESC, id DESC);

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_sub    text,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    details      jsonb NOT NULL DEFAULT '{}',
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, created_at DESC);

CREATE TABLE failed_transactions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_sub         text,
    product_id       uuid,
    idempotency_key  text,
    error_code       text NOT NULL,
    message          text NOT NULL DEFAULT '',
    request_id       text,
    details          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_transactions_created_idx ON failed_transactions (created_at DESC);
