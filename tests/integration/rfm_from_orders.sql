-- rfm_from_orders: F and M per customer recomputed in batch from the order events, counted
-- the way the live profile counts them (agents/profile/fold.py); the import test checks the
-- stream against it.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  the RFM window's start: orders paid from this instant ...
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by payment time
--
-- One row per customer with a paid order in the window:
--   frequency      paid orders whose net (paid minus everything refunded of it) is above 0
--   monetary       the sum of those nets; a refund counts against its order whenever it came
--   last_order_at  the latest payment in the window
--
-- An event stored twice counts once (deduplicated by event_id); an order paid twice under two
-- event ids counts once, with its first payment.
WITH
    order_events AS
    (
        SELECT event_id, customer_id, order_id, status, amount, ts
        FROM events
        WHERE kind = 'order'
        LIMIT 1 BY event_id
    ),
    paid AS
    (
        SELECT customer_id, order_id, argMin(amount, ts) AS amount, min(ts) AS paid_at
        FROM order_events
        WHERE status = 'paid'
        GROUP BY customer_id, order_id
    ),
    refunded AS
    (
        SELECT customer_id, order_id, sum(amount) AS refunded
        FROM order_events
        WHERE status = 'refunded'
        GROUP BY customer_id, order_id
    ),
    net AS
    (
        SELECT
            p.customer_id                                  AS customer_id,
            p.paid_at                                      AS paid_at,
            greatest(p.amount - ifNull(r.refunded, 0), 0)  AS net
        FROM paid AS p
        LEFT JOIN refunded AS r ON r.customer_id = p.customer_id AND r.order_id = p.order_id
        WHERE p.paid_at >= {since:DateTime64(3, 'UTC')} AND p.paid_at < {until:DateTime64(3, 'UTC')}
    )
SELECT
    customer_id,
    countIf(net > 0)  AS frequency,
    sumIf(net, net > 0) AS monetary,
    max(paid_at)      AS last_order_at
FROM net
GROUP BY customer_id
ORDER BY customer_id
