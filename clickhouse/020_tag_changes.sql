-- Every tag a customer gained or lost: `source` 'rule' (the programme file's tags) or
-- 'manual' (`ecrm tags`, the tags topic).
CREATE TABLE IF NOT EXISTS tag_changes
(
    movement_id String,
    customer_id String,
    tag         LowCardinality(String),
    op          LowCardinality(String),  -- 'added' | 'removed'
    source      LowCardinality(String),  -- 'rule' | 'manual'
    at          DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (customer_id, at, tag)
SETTINGS non_replicated_deduplication_window = 10000
