-- Each rule's customers in a period, as the two groups an uplift compares. Parameterized:
--
--     SELECT * FROM rule_customers(since = '2024-05-01 00:00:00', until = '2024-06-01 00:00:00',
--                                  window_hours = 72)
--
-- One row per (rule, customer) touched (rule_touches: fired or held_out) with touched_at in
-- [since, until):
--   treated    1 when the customer's latest touch of the rule in the period was fired, 0 when
--              it was held_out (a customer in both groups only when the rule's holdout share
--              was changed during the period: the latest decision decides)
--   touches    the rule's touches of the customer in the period
--   orders     paid orders attributed (attributed_orders, last touch within window_hours) to
--              those touches; the window may run past `until`
--   converted  1 when orders > 0
--   gmv        paid amount of those orders (before refunds; currencies are not converted)
CREATE VIEW IF NOT EXISTS rule_customers AS
WITH
    touches AS
    (
        SELECT action_id, rule_id, customer_id, outcome, touched_at
        FROM rule_touches
        WHERE touched_at >= {since:DateTime64(3, 'UTC')}
          AND touched_at < {until:DateTime64(3, 'UTC')}
    ),
    conversions AS
    (
        SELECT action_id, count() AS orders, sum(amount) AS gmv
        FROM attributed_orders(window_hours = {window_hours:UInt32})
        GROUP BY action_id
    )
SELECT
    t.rule_id                                                               AS rule_id,
    t.customer_id                                                           AS customer_id,
    toUInt8(argMax(t.outcome, (t.touched_at, t.action_id)) = 'fired')       AS treated,
    uniqExact(t.action_id)                                                  AS touches,
    sum(c.orders)                                                           AS orders,
    toUInt8(orders > 0)                                                     AS converted,
    sum(c.gmv)                                                              AS gmv
FROM touches AS t
LEFT JOIN conversions AS c ON c.action_id = t.action_id
GROUP BY t.rule_id, t.customer_id
