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
SETTINGS non_replicated_deduplication_window = 10000;

-- The latest snapshot of every customer.
CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT
    customer_id,
    argMax(shop_id, s.as_of)        AS shop_id,
    argMax(segment, s.as_of)        AS segment,
    argMax(recency_days, s.as_of)   AS recency_days,
    argMax(frequency, s.as_of)      AS frequency,
    argMax(monetary, s.as_of)       AS monetary,
    argMax(first_order_at, s.as_of) AS first_order_at,
    argMax(last_order_at, s.as_of)  AS last_order_at,
    argMax(level, s.as_of)          AS level,
    argMax(points, s.as_of)         AS points,
    argMax(tags, s.as_of)           AS tags,
    argMax(cart_items, s.as_of)     AS cart_items,
    argMax(cart_value, s.as_of)     AS cart_value,
    max(s.as_of)                  AS as_of
FROM profile_snapshots AS s
GROUP BY customer_id
