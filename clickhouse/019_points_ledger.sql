-- Every movement of the points ledger (agents/membership/ledger.py), once each: earned,
-- unlocked, redeemed, refused, reversed, expired, adjusted, returned; a spend over several
-- lots is a row per lot. `points` is the signed change of the balance (of the pending total
-- when `pending`; the points asked for on a refused request); `balance` is after it.
CREATE TABLE IF NOT EXISTS points_ledger
(
    movement_id  String,
    customer_id  String,
    kind         LowCardinality(String),
    at           DateTime64(3, 'UTC'),
    points       Int64,
    balance      Int64,
    lot          String,                  -- 'order:<id>', 'action:<id>', 'adjust:<request>', …
    source       String,                  -- what caused it: 'order:<id>', 'request:<id>', …
    reason       String,
    pending      UInt8,                   -- 1: it moved the pending total, not the balance
    expires_at   Nullable(DateTime64(3, 'UTC')),  -- for lots earned: when they lapse
    level        LowCardinality(String)   -- the member's level at the movement
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (customer_id, at, movement_id)
SETTINGS non_replicated_deduplication_window = 10000
