-- rule_performance is redefined by 044: coupon_cost is the value of the coupons sent.
DROP VIEW IF EXISTS rule_performance
