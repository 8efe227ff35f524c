-- Every delivery step of an action (`ecrm deliver`, provider receipts, click redirects): sent
-- (the provider took it), failed (refused, or given up after the retries: `reason`), delivered,
-- bounced, opened, clicked. One row per step; the sink's insert token keeps a retried insert
-- from doubling it. Join to rule_decisions on action_id.
CREATE TABLE IF NOT EXISTS deliveries
(
    action_id   String,
    rule_id     LowCardinality(String),
    customer_id String,                   -- '' for an erased customer's last word
    channel     LowCardinality(String),
    provider    LowCardinality(String),   -- the provider's name in the delivery file
    status      LowCardinality(String),   -- sent | failed | delivered | bounced | opened | clicked
    provider_id String,                   -- the provider's message id, when it gave one
    reason      String,                   -- why it failed; '' otherwise
    attempts    UInt16,
    at          DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (action_id, status, at)
SETTINGS non_replicated_deduplication_window = 10000
