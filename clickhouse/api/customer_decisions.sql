-- customer_decisions: a customer's latest rule decisions, newest first (GET /v1/profiles/{id}/decisions).
--
-- Parameters
--   {customer_id:String}  the customer
--   {limit:UInt32}        at most this many rows
SELECT
    decided_at,
    rule_id,
    outcome,
    reason,
    kind,
    channel,
    params,
    coupon_value,
    deliver_at,
    released,
    action_id,
    trigger_event_id
FROM rule_decisions
WHERE customer_id = {customer_id:String}
ORDER BY decided_at DESC, action_id
LIMIT {limit:UInt32}
