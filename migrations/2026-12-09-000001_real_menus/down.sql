ALTER TABLE order_status_history DROP COLUMN allergy_ack;
ALTER TABLE orders DROP COLUMN allergy_ack_at;
ALTER TABLE orders DROP COLUMN allergy_ack_by;
ALTER TABLE orders DROP COLUMN allergies;
ALTER TABLE order_items DROP COLUMN options;
DROP TABLE menu_options;
DROP TABLE option_groups;
ALTER TABLE menu_items DROP COLUMN allergens;
