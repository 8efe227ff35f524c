-- events_page: one page of one source topic-partition's history for `ecrm rules backtest`.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}   events from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}   ... to this one (exclusive), by event time
--   {topic:String}, {partition:UInt16}   the input topic-partition the worker read them from
--   {after_offset:Int64}           the last offset of the previous page (-1 for the first
--                                  page): pages are cut by key, so each query is bounded
--   {rows:UInt32}                  rows per page
--
-- Offset order, the order the live worker decided a topic-partition's events in; the
-- backtest merges the topics of each partition as the worker did (agents/backtest/history.py
-- `in_decision_order`). A row stored twice (a sink replay past the deduplication window)
-- comes back twice; the fold counts it once, as the live worker did.
SELECT
    event_id, kind, customer_id, shop_id, ts, order_id, status, amount, currency,
    sku, qty, price, category, url, campaign, attributes, items, extra, source_offset
FROM events
WHERE ts >= {since:DateTime64(3, 'UTC')}
  AND ts < {until:DateTime64(3, 'UTC')}
  AND source_topic = {topic:String}
  AND source_partition = {partition:UInt16}
  AND toInt64(source_offset) > {after_offset:Int64}
ORDER BY source_offset, event_id
LIMIT {rows:UInt32}
