-- The request a status change answered (the client's `Idempotency-Key` or socket `request_id`, or one
-- the server chose): a retry of a change that was applied, on this node or on the one before it, is
-- recognised from here and answered as done instead of `invalid_transition`. Not unique: kitchen
-- clients count their request ids per connection, so an id may come back for another change.
ALTER TABLE order_status_history ADD COLUMN request_id text;
