-- What each rule did in a period, and what it was worth. Parameterized:
--
--     SELECT * FROM rule_performance(since = '2024-05-01 00:00:00',
--                                    until = '2024-06-01 00:00:00', window_hours = 72)
--
-- One row per rule with a decision (rule_decisions.decided_at) in [since, until).
-- Funnel, in actions (distinct action_id):
--   decided            every decision, whatever its outcome
--   held_out           decided to hold out (control group)
--   suppressed         suppressed (cooldown, contact cap, budget) or a deferral withdrawn
--   sent               fired, at once or released after quiet hours (handed to ecrm.actions)
-- Delivery (deliveries, clickhouse/040; of the fired actions, whenever the step happened):
--   delivery_sent      the provider took it (`ecrm deliver`: sent)
--   delivered          the provider reported it delivered
--   clicked            a tracked link in it was followed (GET /r/…)
--   delivery_failed    refused, given up after the retries, or bounced
--   converted          sent actions with at least one attributed paid order (attributed_orders)
-- Uplift, in customers (rule_customers: treated = latest touch fired, else held out):
--   treated_customers, treated_converted, treated_rate = treated_converted / treated_customers
--   held_out_customers, held_out_converted, held_out_rate (same for the control group)
--   uplift             treated_rate - held_out_rate
--   uplift_ci_low/high 95% confidence interval, normal approximation for a difference of
--                      two independent proportions:
--                      uplift ± 1.959964 * sqrt(pt(1-pt)/nt + pc(1-pc)/nc)
--                      (NULL when a group is empty; unreliable below ~30 per group or with
--                      rates near 0 or 1)
-- Money:
--   treated_gmv, held_out_gmv  attributed paid amounts of each group
--   incremental_gmv    (treated_gmv / treated_customers - held_out_gmv / held_out_customers)
--                      * treated_customers: what the treated group spent beyond what it would
--                      have at the control group's rate; Float64, an estimate
--   coupon_cost        coupon_value of every sent coupon (coupons sent x value), defined once:
--                      what a rule's budget caps (`value_per_day`), what `ecrm rules backtest`
--                      reports for a replay (it cannot know which coupon would have been
--                      redeemed) and what the dashboard shows (009 called it coupon_value_sent)
--   coupon_value_converted  coupon_value of sent coupons followed by an attributed order: a
--                      lower estimate of the value redeemed (orders do not name the coupon
--                      they used; 009 called this coupon_cost)
-- Rates and the interval are Float64, NULL when undefined.
CREATE VIEW IF NOT EXISTS rule_performance AS
WITH
    decisions AS
    (
        SELECT
            rule_id,
            uniqExact(action_id)                             AS decided,
            uniqExactIf(action_id, outcome = 'held_out')     AS held_out,
            uniqExactIf(action_id, outcome = 'suppressed')   AS suppressed,
            uniqExactIf(action_id, outcome = 'fired')        AS sent
        FROM rule_decisions
        WHERE decided_at >= {since:DateTime64(3, 'UTC')}
          AND decided_at < {until:DateTime64(3, 'UTC')}
        GROUP BY rule_id
    ),
    fired_actions AS
    (
        SELECT DISTINCT action_id, rule_id
        FROM rule_decisions
        WHERE outcome = 'fired'
          AND decided_at >= {since:DateTime64(3, 'UTC')}
          AND decided_at < {until:DateTime64(3, 'UTC')}
    ),
    delivery_steps AS
    (
        SELECT
            f.rule_id                                                  AS rule_id,
            uniqExactIf(x.action_id, x.status = 'sent')                AS delivery_sent,
            uniqExactIf(x.action_id, x.status = 'delivered')           AS delivered,
            uniqExactIf(x.action_id, x.status = 'clicked')             AS clicked,
            uniqExactIf(x.action_id, x.status IN ('failed', 'bounced')) AS delivery_failed
        FROM deliveries AS x
        INNER JOIN fired_actions AS f ON f.action_id = x.action_id
        GROUP BY f.rule_id
    ),
    action_conversions AS
    (
        SELECT action_id, count() AS orders
        FROM attributed_orders(window_hours = {window_hours:UInt32})
        GROUP BY action_id
    ),
    sent_actions AS
    (
        SELECT
            t.rule_id                                              AS rule_id,
            uniqExactIf(t.action_id, c.orders > 0)                 AS converted,
            sum(ifNull(t.coupon_value, 0))                         AS coupon_cost,
            sumIf(ifNull(t.coupon_value, 0), c.orders > 0)         AS coupon_value_converted
        FROM rule_touches AS t
        LEFT JOIN action_conversions AS c ON c.action_id = t.action_id
        WHERE t.outcome = 'fired'
          AND t.touched_at >= {since:DateTime64(3, 'UTC')}
          AND t.touched_at < {until:DateTime64(3, 'UTC')}
        GROUP BY t.rule_id
    ),
    groups AS
    (
        SELECT
            rule_id,
            countIf(treated = 1)                  AS treated_customers,
            countIf(treated = 1 AND converted = 1) AS treated_converted,
            sumIf(gmv, treated = 1)               AS treated_gmv,
            countIf(treated = 0)                  AS held_out_customers,
            countIf(treated = 0 AND converted = 1) AS held_out_converted,
            sumIf(gmv, treated = 0)               AS held_out_gmv
        FROM rule_customers(
            since = {since:DateTime64(3, 'UTC')},
            until = {until:DateTime64(3, 'UTC')},
            window_hours = {window_hours:UInt32})
        GROUP BY rule_id
    )
SELECT
    d.rule_id                                                        AS rule_id,
    d.decided                                                        AS decided,
    d.held_out                                                       AS held_out,
    d.suppressed                                                     AS suppressed,
    d.sent                                                           AS sent,
    ifNull(x.delivery_sent, 0)                                       AS delivery_sent,
    ifNull(x.delivered, 0)                                           AS delivered,
    ifNull(x.clicked, 0)                                             AS clicked,
    ifNull(x.delivery_failed, 0)                                     AS delivery_failed,
    s.converted                                                      AS converted,
    g.treated_customers                                              AS treated_customers,
    g.treated_converted                                              AS treated_converted,
    if(g.treated_customers = 0, NULL, g.treated_converted / g.treated_customers) AS treated_rate,
    g.held_out_customers                                             AS held_out_customers,
    g.held_out_converted                                             AS held_out_converted,
    if(g.held_out_customers = 0, NULL, g.held_out_converted / g.held_out_customers) AS held_out_rate,
    treated_rate - held_out_rate                                     AS uplift,
    1.959963984540054 * sqrt(
        treated_rate * (1 - treated_rate) / g.treated_customers
        + held_out_rate * (1 - held_out_rate) / g.held_out_customers)  AS uplift_margin,
    uplift - uplift_margin                                           AS uplift_ci_low,
    uplift + uplift_margin                                           AS uplift_ci_high,
    g.treated_gmv                                                    AS treated_gmv,
    g.held_out_gmv                                                   AS held_out_gmv,
    if(g.treated_customers = 0 OR g.held_out_customers = 0, NULL,
       (toFloat64(g.treated_gmv) / g.treated_customers
        - toFloat64(g.held_out_gmv) / g.held_out_customers) * g.treated_customers) AS incremental_gmv,
    s.coupon_cost                                                    AS coupon_cost,
    s.coupon_value_converted                                         AS coupon_value_converted
FROM decisions AS d
LEFT JOIN sent_actions AS s ON s.rule_id = d.rule_id
LEFT JOIN groups AS g ON g.rule_id = d.rule_id
LEFT JOIN delivery_steps AS x ON x.rule_id = d.rule_id
