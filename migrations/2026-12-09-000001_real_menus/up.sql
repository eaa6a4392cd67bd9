-- Real menus: allergens on dishes, option groups and options (a size, a doneness, extras) with price
-- deltas, options copied onto order lines, and the table's declared allergies with the kitchen's
-- acknowledgement of them.

-- The 14 allergen codes of EU and UK law (checked by the server before they are written).
ALTER TABLE menu_items ADD COLUMN allergens text[] NOT NULL DEFAULT '{}';

-- A choice on a dish: the guest picks between `min_choices` and `max_choices` of its options.
CREATE TABLE option_groups (
    id uuid PRIMARY KEY,
    restaurant_id uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    menu_item_id uuid NOT NULL REFERENCES menu_items (id) ON DELETE CASCADE,
    name text NOT NULL,
    min_choices integer NOT NULL,
    max_choices integer NOT NULL,
    position integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT option_groups_bounds CHECK (min_choices >= 0 AND max_choices >= 1 AND min_choices <= max_choices)
);
CREATE INDEX option_groups_restaurant ON option_groups (restaurant_id);
CREATE INDEX option_groups_item ON option_groups (menu_item_id);

-- One choice of a group. `price_delta_cents` may be negative; a line never costs less than 0.
CREATE TABLE menu_options (
    id uuid PRIMARY KEY,
    restaurant_id uuid NOT NULL REFERENCES restaurants (id) ON DELETE CASCADE,
    group_id uuid NOT NULL REFERENCES option_groups (id) ON DELETE CASCADE,
    name text NOT NULL,
    price_delta_cents bigint NOT NULL DEFAULT 0,
    available boolean NOT NULL DEFAULT true,
    allergens text[] NOT NULL DEFAULT '{}',
    position integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX menu_options_restaurant ON menu_options (restaurant_id);
CREATE INDEX menu_options_group ON menu_options (group_id);

-- The options a line was ordered with, copied at order time like its name and price:
-- [{option_id, group_name, name, price_delta_cents}].
ALTER TABLE order_items ADD COLUMN options jsonb NOT NULL DEFAULT '[]';

-- The table's declared allergies, and who in the kitchen acknowledged them, and when.
ALTER TABLE orders ADD COLUMN allergies text[] NOT NULL DEFAULT '{}';
ALTER TABLE orders ADD COLUMN allergy_ack_by uuid;
ALTER TABLE orders ADD COLUMN allergy_ack_at timestamptz;
-- The status change that carried the acknowledgement.
ALTER TABLE order_status_history ADD COLUMN allergy_ack boolean NOT NULL DEFAULT false;
