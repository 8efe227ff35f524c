-- profile_snapshots becomes a ReplacingMergeTree keyed by customer (033): it gained a row per
-- customer per batch and profiles_latest was a GROUP BY over all of them. The history it held
-- until now is copied here first (full, as it was: analysts may still want it; drop it when
-- nobody does). Rows a sink of an older ecrm inserts between this copy and 032 are not
-- carried over: stop the sinks (workers) while migrating, or replay the outbox after.
CREATE TABLE IF NOT EXISTS profile_snapshots_until_030
ENGINE = MergeTree
PARTITION BY toYYYYMM(as_of)
ORDER BY (customer_id, as_of)
AS SELECT * FROM profile_snapshots
