ALTER TABLE order_status_history DROP COLUMN request_id;
