-- The audit of erasures (`ecrm customer erase`, docs/privacy.md): one row each, written by
-- the sink once it deleted the customer's rows from every table with a customer_id. It holds
-- no personal data: the erasure's random id (also on the Redis erasure list, beside the keyed
-- hash of the customer id), when it was asked for and done, who asked, how many rows went.
CREATE TABLE IF NOT EXISTS erasures
(
    erasure_id   String,
    requested_at DateTime64(3, 'UTC'),
    done_at      DateTime64(3, 'UTC'),
    operator     String,
    rows_deleted UInt64,
    tables       Map(String, UInt64)  -- table -> rows deleted from it
)
ENGINE = MergeTree
ORDER BY (requested_at, erasure_id)
SETTINGS non_replicated_deduplication_window = 10000
