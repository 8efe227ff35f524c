-- profiles: the customers whose current profile meets a marketer's where-clause, for
-- `ecrm audience export --where` and `ecrm campaign send --where`.
--
-- Parameters
--   {now:DateTime64(3, 'UTC')}  the instant recency_days is counted to (the command's clock)
-- and the where-clause itself, checked by schemas/audience_where.py and put in place of the
-- marker below by agents/audience.py.
--
-- The clause sees every column of profiles_latest. recency_days is re-rated to {now} (whole
-- days since the last paid order, as `ecrm profile` shows it; NULL for a customer who never
-- ordered), since a snapshot keeps the value of when it was taken; the other columns are as
-- of the customer's latest snapshot (as_of; the worker snapshots a time-driven segment change
-- too). readonly = 1: the statement can read and nothing else.
SELECT
    customer_id, shop_id, segment, recency_days, frequency, monetary,
    first_order_at, last_order_at, level, points, tags, cart_items, cart_value, as_of
FROM
(
    SELECT
        customer_id,
        shop_id,
        segment,
        if(last_order_at IS NULL, NULL, toInt32(greatest(intDiv(
            toUnixTimestamp64Milli({now:DateTime64(3, 'UTC')})
                - toUnixTimestamp64Milli(assumeNotNull(last_order_at)),
            86400000), 0))) AS recency_days,
        frequency,
        monetary,
        first_order_at,
        last_order_at,
        level,
        points,
        tags,
        cart_items,
        cart_value,
        as_of
    FROM profiles_latest
)
WHERE (WHERE_CLAUSE)
ORDER BY customer_id
SETTINGS readonly = 1
