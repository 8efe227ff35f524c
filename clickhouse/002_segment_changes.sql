-- Every change of a customer's RFM segment, caused by an event or by time passing.
-- The latest to_segment per customer is the customer's current segment.
CREATE TABLE IF NOT EXISTS segment_changes
(
    customer_id  String,
    from_segment LowCardinality(String),
    to_segment   LowCardinality(String),
    at           DateTime64(3, 'UTC'),
    cause        LowCardinality(String),  -- 'event' | 'time'
    event_id     String                   -- the event that caused it; '' when time did
)
ENGINE = MergeTree
ORDER BY (customer_id, at)
SETTINGS non_replicated_deduplication_window = 10000
