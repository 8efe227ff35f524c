-- gmv_by_segment: what each RFM segment is worth, by the segment customers are in NOW.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  orders from this instant (inclusive) ... (default -365d)
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by event time (default now)
--
-- One row per (segment, currency):
--   segment    the customer's current segment: the latest to_segment in segment_changes;
--              a customer with no change recorded is 'prospect'
--   gmv        paid amounts minus refunded amounts
--   orders     distinct paid orders
--   customers  distinct customers with a paid order
--   aov        average order value = gmv / orders (0 when there are no paid orders)
--
-- An event stored twice (a replay) counts once: rows are deduplicated by event_id.
WITH
    current_segment AS
    (
        SELECT customer_id, argMax(to_segment, at) AS segment
        FROM segment_changes
        GROUP BY customer_id
    ),
    order_events AS
    (
        SELECT event_id, customer_id, order_id, status, amount, currency
        FROM events
        WHERE kind = 'order'
          AND ts >= {since:DateTime64(3, 'UTC')}
          AND ts < {until:DateTime64(3, 'UTC')}
        LIMIT 1 BY event_id
    )
SELECT
    ifNull(nullIf(s.segment, ''), 'prospect')                             AS segment,
    o.currency                                                            AS currency,
    sumIf(o.amount, o.status = 'paid') - sumIf(o.amount, o.status = 'refunded') AS gmv,
    uniqExactIf(o.order_id, o.status = 'paid')                            AS orders,
    uniqExactIf(o.customer_id, o.status = 'paid')                         AS customers,
    if(orders = 0, toDecimal128(0, 2), round(gmv / orders, 2))            AS aov
FROM order_events AS o
LEFT JOIN current_segment AS s ON s.customer_id = o.customer_id
GROUP BY segment, currency
ORDER BY gmv DESC, segment, currency
