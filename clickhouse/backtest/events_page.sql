-- events_page: one page of history for `ecrm rules backtest`, in the order it is replayed.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}   events from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}   ... to this one (exclusive), by event time
--   {after_ts:DateTime64(3, 'UTC')}, {after_customer:String}, {after_event:String}
--                                  the last row of the previous page (since, '', '' for the
--                                  first page): pages are cut by key, so each query is bounded
--   {rows:UInt32}                  rows per page
--
-- Replay order is event time, then customer and event id, so a replay is deterministic. A row
-- stored twice (a sink replay past the deduplication window) comes back twice; the fold counts
-- it once, as the live worker did.
SELECT
    event_id, kind, customer_id, shop_id, ts, order_id, status, amount, currency,
    sku, qty, price, category, url, campaign, attributes, items, extra
FROM events
WHERE ts >= {since:DateTime64(3, 'UTC')}
  AND ts < {until:DateTime64(3, 'UTC')}
  AND (ts, customer_id, event_id)
      > ({after_ts:DateTime64(3, 'UTC')}, {after_customer:String}, {after_event:String})
ORDER BY ts, customer_id, event_id
LIMIT {rows:UInt32}
