-- Every decision a rule made for a customer, whatever the outcome: fired (sent to
-- ecrm.actions), held_out (the rule's control group: nothing sent), suppressed (cooldown,
-- contact_cap, budget, ... in `reason`) or deferred (quiet hours; a later `fired` row with
-- the same action_id and released = 1 records the delivery).
CREATE TABLE IF NOT EXISTS rule_decisions
(
    action_id        String,
    rule_id          LowCardinality(String),
    customer_id      String,
    outcome          LowCardinality(String),  -- fired | held_out | suppressed | deferred
    reason           LowCardinality(String),  -- '' when fired
    kind             LowCardinality(String),
    channel          LowCardinality(String),
    params           String,                  -- JSON, as the rule gave it
    trigger_event_id String,
    decided_at       DateTime64(3, 'UTC'),
    deliver_at       Nullable(DateTime64(3, 'UTC')),
    priority         Int32,
    coupon_value     Nullable(Decimal(18, 2)),
    released         UInt8
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (rule_id, decided_at, customer_id)
SETTINGS non_replicated_deduplication_window = 10000
