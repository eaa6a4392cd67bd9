-- Scan2Order initial schema. Money is integer minor units; times are timestamptz (UTC on the wire).

CREATE TABLE restaurants (
    id                  uuid PRIMARY KEY,
    slug                text NOT NULL UNIQUE,
    name                text NOT NULL,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    time_zone           text NOT NULL,
    accepting_orders    boolean NOT NULL DEFAULT true,
    -- Bumped on every change a guest's cached menu must see (ETag source).
    menu_version        bigint NOT NULL DEFAULT 1,
    ticket_warn_after_s integer NOT NULL DEFAULT 600,
    ticket_late_after_s integer NOT NULL DEFAULT 1200,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE menu_categories (
    id            uuid PRIMARY KEY,
    restaurant_id uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    position      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX menu_categories_restaurant ON menu_categories (restaurant_id, position);

CREATE TABLE menu_items (
    id            uuid PRIMARY KEY,
    restaurant_id uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    category_id   uuid NOT NULL REFERENCES menu_categories (id),
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    price_cents   bigint NOT NULL CHECK (price_cents >= 0),
    available     boolean NOT NULL DEFAULT true,
    position      integer NOT NULL DEFAULT 0,
    tags          text[] NOT NULL DEFAULT '{}',
    -- Deleted items leave the menu; past orders keep their copied name and price.
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX menu_items_restaurant ON menu_items (restaurant_id, category_id, position) WHERE deleted_at IS NULL;
CREATE INDEX menu_items_category ON menu_items (category_id) WHERE deleted_at IS NULL;

CREATE TABLE restaurant_tables (
    id            uuid PRIMARY KEY,
    restaurant_id uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    label         text NOT NULL,
    -- 128+ random bits, URL-safe; rotation replaces it.
    token         text NOT NULL UNIQUE,
    active        boolean NOT NULL DEFAULT true,
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX restaurant_tables_label ON restaurant_tables (restaurant_id, label) WHERE deleted_at IS NULL;

CREATE TABLE staff_users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('chef', 'admin')),
    restaurant_id uuid REFERENCES restaurants (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'chef') = (restaurant_id IS NOT NULL))
);
CREATE INDEX staff_users_restaurant ON staff_users (restaurant_id);

CREATE TABLE staff_sessions (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX staff_sessions_user ON staff_sessions (user_id);
CREATE INDEX staff_sessions_expiry ON staff_sessions (expires_at);

CREATE TABLE otp_challenges (
    id          uuid PRIMARY KEY,
    phone       text NOT NULL,
    code_hash   bytea NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz
);
CREATE INDEX otp_challenges_phone ON otp_challenges (phone, created_at DESC);
CREATE INDEX otp_challenges_expiry ON otp_challenges (expires_at);

CREATE TABLE customer_sessions (
    token_hash bytea PRIMARY KEY,
    phone      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at);

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    restaurant_id   uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    table_id        uuid NOT NULL REFERENCES restaurant_tables (id),
    table_label     text NOT NULL,
    ticket_no       integer NOT NULL CHECK (ticket_no > 0),
    -- The restaurant's local date when the order was placed; ticket numbers restart each day.
    business_day    date NOT NULL,
    phone           text NOT NULL,
    status          text NOT NULL CHECK (status IN ('placed', 'accepted', 'preparing', 'ready', 'served', 'cancelled')),
    note            text NOT NULL DEFAULT '',
    total_cents     bigint NOT NULL CHECK (total_cents >= 0),
    currency        text NOT NULL,
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT orders_idempotency UNIQUE (restaurant_id, idempotency_key),
    CONSTRAINT orders_ticket UNIQUE (restaurant_id, business_day, ticket_no)
);
-- The kitchen's live list: only orders not yet served or cancelled.
CREATE INDEX orders_live ON orders (restaurant_id, created_at) WHERE status NOT IN ('served', 'cancelled');
-- A guest's history across restaurants, newest first.
CREATE INDEX orders_phone ON orders (phone, created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    menu_item_id     uuid NOT NULL,
    name             text NOT NULL,
    unit_price_cents bigint NOT NULL,
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    note             text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE order_status_history (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status     text NOT NULL,
    changed_at timestamptz NOT NULL,
    changed_by uuid
);
CREATE INDEX order_status_history_order ON order_status_history (order_id, id);

-- Messages to guests, written in the same transaction as the change that causes them.
CREATE TABLE notification_outbox (
    id              bigserial PRIMARY KEY,
    dedup_key       text NOT NULL UNIQUE,
    phone           text NOT NULL,
    template        text NOT NULL,
    params          jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX notification_outbox_pending ON notification_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
