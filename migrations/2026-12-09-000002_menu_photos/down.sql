ALTER TABLE menu_items DROP COLUMN image_hash;
DROP TABLE menu_images;
