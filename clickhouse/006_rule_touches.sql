-- Every time a rule touched a customer, for attribution: a decision that was `fired` (the
-- action went out) or `held_out` (the customer is in the rule's control group and got
-- nothing; recorded so the two groups can be compared). Suppressed and deferred decisions
-- touch nobody: a deferred action touches when it is delivered, as its second row
-- (outcome fired, released = 1, same action_id, decided_at = the delivery time).
-- Deduplicated by (action_id, outcome), so a decision row stored twice counts once.
CREATE VIEW IF NOT EXISTS rule_touches AS
SELECT
    action_id,
    rule_id,
    customer_id,
    outcome,                   -- 'fired' | 'held_out'
    decided_at AS touched_at,  -- for a released action: when it was delivered
    priority,
    kind,
    channel,
    coupon_value,              -- NULL unless the action is a coupon
    released
FROM rule_decisions
WHERE outcome IN ('fired', 'held_out')
LIMIT 1 BY action_id, outcome
