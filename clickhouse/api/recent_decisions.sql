-- recent_decisions: the latest rule decisions for every customer, newest first (the dashboard's live feed).
--
-- Parameters
--   {limit:UInt32}  at most this many rows
SELECT
    decided_at,
    customer_id,
    rule_id,
    outcome,
    reason,
    kind,
    channel,
    coupon_value
FROM rule_decisions
ORDER BY decided_at DESC, action_id
LIMIT {limit:UInt32}
