-- The current snapshot of every customer's profile: a ReplacingMergeTree keyed by customer,
-- versioned by (as_of, written_at) - the order 015 chose: the event time the snapshot is as
-- of, then the later write (013) - packed into one UInt128 as a merge version must be.
-- Merges keep one row per customer, so the table is bounded by the number of customers,
-- not of batches; unmerged parts may still hold older rows: read it with FINAL
-- (profiles_latest does). Not partitioned: a ReplacingMergeTree replaces only within a
-- partition, and a customer's rows must share one. Filled with the history copied by 030.
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
    as_of          DateTime64(3, 'UTC'),
    written_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    version        UInt128 MATERIALIZED
        bitShiftLeft(toUInt128(toUnixTimestamp64Milli(as_of)), 64)
        + toUInt128(toUnixTimestamp64Milli(written_at))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 10000
AS SELECT
    customer_id, shop_id, segment, recency_days, frequency, monetary, first_order_at,
    last_order_at, level, points, tags, cart_items, cart_value, as_of, written_at
FROM profile_snapshots_until_030
