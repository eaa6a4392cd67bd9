-- Menu photos: each upload decoded, resized and re-encoded on the server (a menu size and a
-- thumbnail), stored once by the SHA-256 of what is served, and served from immutable URLs.
CREATE TABLE menu_images (
    hash text PRIMARY KEY,
    menu_jpeg bytea NOT NULL,
    thumb_jpeg bytea NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE menu_items ADD COLUMN image_hash text REFERENCES menu_images (hash);
