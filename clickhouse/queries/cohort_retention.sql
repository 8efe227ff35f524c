-- cohort_retention: of the customers who first ordered in a month, what share ordered again k months later.
--
-- Parameters
--   {since:Date}  cohorts from this month (the month containing it, inclusive) ...
--   {until:Date}  ... to this date (exclusive)
--
-- A customer's cohort is the month (UTC) of their first paid order ever (paid_orders).
-- One row per (cohort, k) from k = 0 up to the last month with any paid order:
--   cohort        first day of the cohort month
--   cohort_size   customers in the cohort
--   months_after  k: 0 is the cohort month itself, 1 the month after, ...
--   customers     cohort customers with a paid order other than their first in month k
--                 (for k = 0: a second order in their first month)
--   retention     customers / cohort_size (Float64)
WITH
    numbered AS
    (
        SELECT
            customer_id,
            toStartOfMonth(ts)                                             AS month,
            row_number() OVER (PARTITION BY customer_id ORDER BY ts, event_id) AS nth
        FROM paid_orders
    ),
    cohorts AS
    (
        SELECT customer_id, month AS cohort
        FROM numbered
        WHERE nth = 1
          AND month >= toStartOfMonth({since:Date})
          AND month < {until:Date}
    ),
    sizes AS
    (
        SELECT cohort, count() AS cohort_size
        FROM cohorts
        GROUP BY cohort
    ),
    again AS
    (
        SELECT
            c.cohort                                AS cohort,
            dateDiff('month', c.cohort, n.month)    AS months_after,
            uniqExact(n.customer_id)                AS customers
        FROM numbered AS n
        INNER JOIN cohorts AS c ON c.customer_id = n.customer_id
        WHERE n.nth > 1
        GROUP BY cohort, months_after
    ),
    grid AS
    (
        SELECT
            cohort,
            cohort_size,
            arrayJoin(range(toUInt64(dateDiff('month', cohort, (SELECT max(month) FROM numbered)) + 1)))
                AS months_after
        FROM sizes
    )
SELECT
    g.cohort                          AS cohort,
    g.cohort_size                     AS cohort_size,
    g.months_after                    AS months_after,
    a.customers                       AS customers,
    a.customers / g.cohort_size       AS retention
FROM grid AS g
LEFT JOIN again AS a ON a.cohort = g.cohort AND a.months_after = g.months_after
ORDER BY cohort, months_after
