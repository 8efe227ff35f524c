-- Every paid order once: `events` rows of kind 'order' and status 'paid', deduplicated by
-- event_id (a replayed event stored twice counts once). The base of attribution, repurchase
-- intervals and cohorts. A plain view: computed when queried, so it is never stale.
-- amount is what was paid (a later refund is a separate 'refunded' event, not subtracted).
CREATE VIEW IF NOT EXISTS paid_orders AS
SELECT
    event_id,
    customer_id,
    shop_id,
    order_id,
    ts,
    amount,
    currency,
    items
FROM events
WHERE kind = 'order' AND status = 'paid'
LIMIT 1 BY event_id
