-- A snapshot of a customer's profile each time the worker changed it (an event, or time
-- moving the segment). `profiles_latest` below gives the current row per customer.
CREATE TABLE IF NOT EXISTS profile_snapshots
(
    customer_id    String,
    shop_id        LowCardinality(String),
    segment        LowCardinality(String),
    recency_days   Nullable(Int32),
    frequency      UInt32,
    monetary       Decimal(18, 2),
    first_order_at Nullable(DateTime64(3, 'UTC')),
    last_order_at  Nullable(DateTime64(3, 'UTC')),
    level          LowCardinality(String),
    points         Int64,
    tags           Array(String),
    cart_items     UInt32,
    cart_value     Decimal(18, 2),
    as_of          DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(as_of)
ORDER BY (customer_id, as_of)
SETTINGS non_replicated_deduplication_window = 10000
