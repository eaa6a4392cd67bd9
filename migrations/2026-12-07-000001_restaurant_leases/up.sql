-- Ownership of restaurants: exactly one node at a time runs a restaurant's actor and writes its orders.
-- The fence only grows (a release keeps it), and every write transaction of the owner checks it, so a
-- node that lost its lease (paused, partitioned, replaced) can never commit after another took over.
CREATE TABLE restaurant_leases (
    restaurant_id uuid PRIMARY KEY REFERENCES restaurants (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    fence         bigint NOT NULL CHECK (fence > 0),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX restaurant_leases_node ON restaurant_leases (node_id);

-- The nodes of a fleet, each renewing its row with its leases; a node whose row is older than a lease
-- is gone. A single node has its row too.
CREATE TABLE cluster_nodes (
    node_id           text PRIMARY KEY,
    started_at        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    restaurants_owned integer NOT NULL DEFAULT 0,
    sockets           integer NOT NULL DEFAULT 0
);
