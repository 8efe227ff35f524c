-- repurchase_interval: how long customers take to order again, per RFM segment.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  repeat orders from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by event time
--
-- An interval is the time between a paid order (paid_orders: deduplicated by event_id) and
-- the customer's previous paid order, whenever that was; it belongs to the period of the
-- later order. One row per current segment (latest to_segment in segment_changes;
-- 'prospect' without one), then a row 'all' over every segment:
--   segment          the customer's current segment, or 'all'
--   intervals        repeat orders in the period
--   customers        distinct customers with one
--   avg_days         mean interval in days (Float64)
--   p25_days, median_days, p75_days, p90_days   quantiles of the interval in days
--                    (quantileExact: an observed interval, the n*q-th smallest counting
--                    from 0, so the upper of the two middles for an even count)
WITH
    current_segment AS
    (
        SELECT customer_id, argMax(to_segment, at) AS segment
        FROM segment_changes
        GROUP BY customer_id
    ),
    gaps AS
    (
        SELECT
            customer_id,
            ts,
            lagInFrame(toNullable(ts)) OVER (
                PARTITION BY customer_id ORDER BY ts, event_id
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)  AS previous_ts
        FROM paid_orders
    ),
    intervals AS
    (
        SELECT
            g.customer_id                                            AS customer_id,
            ifNull(nullIf(toString(s.segment), ''), 'prospect')      AS customer_segment,
            dateDiff('millisecond', assumeNotNull(g.previous_ts), g.ts) / 86400000 AS days
        FROM gaps AS g
        LEFT JOIN current_segment AS s ON s.customer_id = g.customer_id
        WHERE g.previous_ts IS NOT NULL
          AND g.ts >= {since:DateTime64(3, 'UTC')}
          AND g.ts < {until:DateTime64(3, 'UTC')}
    )
SELECT
    if(grouping(customer_segment) = 1, 'all', customer_segment) AS segment,
    count()                                     AS intervals,
    uniqExact(customer_id)                      AS customers,
    avg(days)                                   AS avg_days,
    quantileExact(0.25)(days)                   AS p25_days,
    quantileExact(0.5)(days)                    AS median_days,
    quantileExact(0.75)(days)                   AS p75_days,
    quantileExact(0.9)(days)                    AS p90_days
FROM intervals
GROUP BY GROUPING SETS ((customer_segment), ())
ORDER BY grouping(customer_segment), intervals DESC, segment
