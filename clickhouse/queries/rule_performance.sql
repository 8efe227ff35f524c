-- rule_performance: per rule, the funnel (decided -> sent -> delivered -> clicked -> converted), conversion of treated vs held-out customers, uplift with a 95% CI, incremental GMV and coupon cost.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  decisions from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by decided_at
--   {window_hours:UInt32}         attribution window in hours: policy.attribution_window of the rules file (default 72)
--
-- A thin reading of the parameterized view rule_performance (clickhouse/042_rule_performance.sql),
-- which defines every column; attribution is last touch (clickhouse/007_attributed_orders.sql):
--   rule_id, decided, held_out, suppressed, sent,
--   delivery_sent, delivered, clicked, delivery_failed   (deliveries: what `ecrm deliver` and receipts said)
--   converted
--   treated_customers, treated_converted, treated_rate
--   held_out_customers, held_out_converted, held_out_rate
--   uplift, uplift_margin, uplift_ci_low, uplift_ci_high    (treated_rate - held_out_rate ± 95%)
--   treated_gmv, held_out_gmv, incremental_gmv
--   coupon_cost (coupons sent x value: what the budget caps and the backtest reports),
--   coupon_value_converted (sent coupons followed by an attributed order)
-- Rules with no holdout have NULL held-out rate, uplift and incremental GMV.
SELECT *
FROM rule_performance(
    since = {since:DateTime64(3, 'UTC')},
    until = {until:DateTime64(3, 'UTC')},
    window_hours = {window_hours:UInt32})
ORDER BY sent DESC, rule_id
