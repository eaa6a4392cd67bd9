// Kept in step with `migrations/` by hand and checked by `diesel print-schema` in review.

diesel::table! {
    restaurants (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        currency -> Text,
        time_zone -> Text,
        accepting_orders -> Bool,
        menu_version -> Int8,
        ticket_warn_after_s -> Int4,
        ticket_late_after_s -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    menu_categories (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        name -> Text,
        position -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    menu_items (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        category_id -> Uuid,
        name -> Text,
        description -> Text,
        price_cents -> Int8,
        available -> Bool,
        position -> Int4,
        tags -> Array<Text>,
        deleted_at -> Nullable<Timestamptz>,
        allergens -> Array<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        image_hash -> Nullable<Text>,
    }
}

diesel::table! {
    menu_images (hash) {
        hash -> Text,
        menu_jpeg -> Bytea,
        thumb_jpeg -> Bytea,
        width -> Int4,
        height -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    restaurant_tables (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        label -> Text,
        token -> Text,
        active -> Bool,
        deleted_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    staff_users (id) {
        id -> Uuid,
        username -> Text,
        password_hash -> Text,
        role -> Text,
        restaurant_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    staff_sessions (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    otp_challenges (id) {
        id -> Uuid,
        phone -> Text,
        code_hash -> Bytea,
        attempts -> Int4,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        consumed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    customer_sessions (token_hash) {
        token_hash -> Bytea,
        phone -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        table_id -> Uuid,
        table_label -> Text,
        ticket_no -> Int4,
        business_day -> Date,
        phone -> Text,
        status -> Text,
        note -> Text,
        total_cents -> Int8,
        currency -> Text,
        idempotency_key -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        allergies -> Array<Text>,
        allergy_ack_by -> Nullable<Uuid>,
        allergy_ack_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    order_items (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int4,
        menu_item_id -> Uuid,
        name -> Text,
        unit_price_cents -> Int8,
        quantity -> Int4,
        note -> Text,
        options -> Jsonb,
    }
}

diesel::table! {
    order_status_history (id) {
        id -> Int8,
        order_id -> Uuid,
        status -> Text,
        changed_at -> Timestamptz,
        changed_by -> Nullable<Uuid>,
        request_id -> Nullable<Text>,
        allergy_ack -> Bool,
    }
}

diesel::table! {
    notification_outbox (id) {
        id -> Int8,
        dedup_key -> Text,
        phone -> Text,
        template -> Text,
        params -> Jsonb,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        locked_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    restaurant_leases (restaurant_id) {
        restaurant_id -> Uuid,
        node_id -> Text,
        fence -> Int8,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    cluster_nodes (node_id) {
        node_id -> Text,
        started_at -> Timestamptz,
        last_seen -> Timestamptz,
        restaurants_owned -> Int4,
        sockets -> Int4,
    }
}

diesel::table! {
    option_groups (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        menu_item_id -> Uuid,
        name -> Text,
        min_choices -> Int4,
        max_choices -> Int4,
        position -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    menu_options (id) {
        id -> Uuid,
        restaurant_id -> Uuid,
        group_id -> Uuid,
        name -> Text,
        price_delta_cents -> Int8,
        available -> Bool,
        allergens -> Array<Text>,
        position -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(option_groups -> menu_items (menu_item_id));
diesel::joinable!(menu_options -> option_groups (group_id));
diesel::joinable!(menu_categories -> restaurants (restaurant_id));
diesel::joinable!(menu_items -> menu_categories (category_id));
diesel::joinable!(restaurant_tables -> restaurants (restaurant_id));
diesel::joinable!(staff_sessions -> staff_users (user_id));
diesel::joinable!(orders -> restaurants (restaurant_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_status_history -> orders (order_id));
diesel::joinable!(restaurant_leases -> restaurants (restaurant_id));

diesel::allow_tables_to_appear_in_same_query!(
    restaurants,
    menu_categories,
    menu_items,
    restaurant_tables,
    staff_users,
    staff_sessions,
    otp_challenges,
    customer_sessions,
    orders,
    order_items,
    order_status_history,
    notification_outbox,
    restaurant_leases,
    cluster_nodes,
    option_groups,
    menu_options,
    menu_images,
);
