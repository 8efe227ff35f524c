-- lapsed_customers: customers who have bought before but not for a while: a win-back audience (ecrm audience export --query).
--
-- Parameters
--   {days:UInt32}                  no paid order for at least this many days (default 90)
--   {min_monetary:Decimal(18, 2)}  net spend in the RFM window of at least this much (default 0)
--
-- From each customer's latest profile (profiles_latest); customers who never ordered are
-- left out. One row per customer, longest lapsed first, so it can feed
-- `ecrm audience export --query lapsed_customers` and `ecrm campaign send --query ...`:
--   customer_id            the customer
--   shop_id                their shop
--   segment                their RFM segment now
--   days_since_last_order  whole days from the last paid order to now
--   frequency              paid orders in the RFM window, as of the latest snapshot
--   monetary               net spend in the RFM window, as of the latest snapshot
--   last_order_at          when the last paid order was placed
SELECT
    customer_id,
    shop_id,
    segment,
    toInt64(intDiv(
        toUnixTimestamp64Milli(now64(3)) - toUnixTimestamp64Milli(assumeNotNull(last_order_at)),
        86400000)) AS days_since_last_order,
    frequency,
    monetary,
    last_order_at
FROM profiles_latest
WHERE last_order_at IS NOT NULL
  AND last_order_at <= now64(3) - toIntervalDay({days:UInt32})
  AND monetary >= {min_monetary:Decimal(18, 2)}
ORDER BY last_order_at, customer_id
