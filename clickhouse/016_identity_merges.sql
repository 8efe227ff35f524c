-- Every identity link the worker applied (ecrm.identities; Segment identify/alias through
-- `ecrm api`): `merged_id` (an anonymous or old id) became `customer_id`, and what its
-- profile and rule state brought along. `outcome` is `merged`, or `already_linked` when the
-- two ids were one customer already (a repeated identify).
CREATE TABLE IF NOT EXISTS identity_merges
(
    customer_id    String,
    merged_id      String,
    event_id       String,
    merged_at      DateTime64(3, 'UTC'),
    outcome        LowCardinality(String),
    cart_items     UInt32,
    favorites      UInt32,
    views          UInt32,
    orders         UInt32,
    waits          UInt32,
    segment_before LowCardinality(String),
    segment_after  LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(merged_at)
ORDER BY (customer_id, merged_at, merged_id)
SETTINGS non_replicated_deduplication_window = 10000
