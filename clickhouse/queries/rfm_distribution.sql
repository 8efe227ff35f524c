-- rfm_distribution: how many customers each RFM segment holds now, and what R, F and M look like in it.
--
-- Parameters: none.
--
-- One row per segment, from each customer's latest profile snapshot (profiles_latest):
--   segment                     the customer's segment (time-driven changes are snapshotted too)
--   customers                   customers in it
--   share                       customers / all customers with a profile (Float64)
--   avg_days_since_last_order   days from the last paid order to now (Float64; customers who
--                               never ordered are left out; NULL if none did)
--   avg_frequency               paid orders in the RFM window, as of the latest snapshot (Float64)
--   avg_monetary                net spend in the RFM window, as of the latest snapshot (Float64)
--   total_monetary              the segment's total net spend
SELECT
    segment,
    count()                                                    AS customers,
    customers / sum(customers) OVER ()                         AS share,
    avg(dateDiff('second', last_order_at, now64(3))) / 86400   AS avg_days_since_last_order,
    avg(frequency)                                             AS avg_frequency,
    avg(toFloat64(monetary))                                   AS avg_monetary,
    sum(monetary)                                              AS total_monetary
FROM profiles_latest
GROUP BY segment
ORDER BY customers DESC, segment
