-- One row per valid input event, as the worker accepted it; the analysts' fact table.
-- Kind-specific columns are empty/zero when they do not apply (e.g. sku on an order).
-- items and extra hold JSON text: the order's line items and the event's unknown fields.
CREATE TABLE IF NOT EXISTS events
(
    event_id         String,
    kind             LowCardinality(String),  -- 'order' | 'cart' | 'favorite' | 'browse' | 'campaign' (011)
    customer_id      String,
    shop_id          LowCardinality(String),
    ts               DateTime64(3, 'UTC'),    -- event time
    order_id         String,
    status           LowCardinality(String),  -- 'paid' | 'refunded' | '' (not an order)
    amount           Decimal(18, 2),          -- for 'refunded': the amount refunded
    currency         LowCardinality(String),
    sku              String,
    qty              UInt32,
    price            Decimal(18, 2),
    category         String,
    url              String,
    items            String,                  -- JSON array of {sku, qty, price, category}
    extra            String,                  -- JSON object of fields the contract does not name
    source_topic     LowCardinality(String),
    source_partition UInt16,
    source_offset    UInt64,
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (customer_id, ts, event_id)
-- The sink retries an outbox entry with the same insert_deduplication_token; this window
-- is how many recent insert blocks ClickHouse remembers to drop such a retry.
SETTINGS non_replicated_deduplication_window = 10000
