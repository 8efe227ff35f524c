-- The latest snapshot of every customer: profile_snapshots (a ReplacingMergeTree by customer,
-- 033) read with FINAL, which applies the replacement merges have not yet made - one row per
-- customer, the greatest (as_of, written_at). The same columns as before.
CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT
    customer_id,
    shop_id,
    segment,
    recency_days,
    frequency,
    monetary,
    first_order_at,
    last_order_at,
    level,
    points,
    tags,
    cart_items,
    cart_value,
    as_of
FROM profile_snapshots FINAL
