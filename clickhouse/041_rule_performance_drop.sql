-- rule_performance is redefined by 042 to carry the delivery funnel (deliveries, clickhouse/040) and the coupon cost defined once.
DROP VIEW IF EXISTS rule_performance;
