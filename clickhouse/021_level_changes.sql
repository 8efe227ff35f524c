-- Every change of a member's level: 'upgrade' (the metric crossed a threshold), 'term_end'
-- (below the keep threshold at the end of the term and the grace), 'pinned' (by hand).
-- Joining (on the lowest level, with the first paid order or points) is not a change.
CREATE TABLE IF NOT EXISTS level_changes
(
    movement_id String,
    customer_id String,
    from_level  LowCardinality(String),
    to_level    LowCardinality(String),
    reason      LowCardinality(String),
    at          DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (customer_id, at)
SETTINGS non_replicated_deduplication_window = 10000
