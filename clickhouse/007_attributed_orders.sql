-- Last-touch attribution. Parameterized view, called with the attribution window in hours
-- (policy.attribution_window of the rules file; 72 by default):
--
--     SELECT * FROM attributed_orders(window_hours = 72)
--
-- One row per paid order (paid_orders) that has a touch (rule_touches) of any rule for the
-- same customer strictly before it and at most window_hours before it. The order is that
-- touch's conversion: the most recent one (ties broken by higher priority, then action_id),
-- whether it was fired (a treated conversion) or held_out (a control-group conversion).
-- An order with no touch in its window is not listed. Each order is attributed to at most
-- one action, so summing amounts over rules never counts an order twice.
--
-- A view, not a materialized view: an order's touch can be inserted after the order (the
-- two tables are filled by different sinks, a deferred action's delivery comes later), and
-- a later touch can take an order over from an earlier one; an insert-triggered
-- materialized view would freeze whichever it saw first. Computed at query time it is
-- always right, for any window, after any replay.
CREATE VIEW IF NOT EXISTS attributed_orders AS
SELECT
    o.event_id                                                     AS event_id,
    o.customer_id                                                  AS customer_id,
    o.order_id                                                     AS order_id,
    o.ts                                                           AS ts,
    o.amount                                                       AS amount,
    o.currency                                                     AS currency,
    argMax(t.action_id, (t.touched_at, t.priority, t.action_id))   AS action_id,
    argMax(t.rule_id, (t.touched_at, t.priority, t.action_id))     AS rule_id,
    argMax(t.outcome, (t.touched_at, t.priority, t.action_id))     AS outcome,
    max(t.touched_at)                                              AS touched_at
FROM paid_orders AS o
INNER JOIN rule_touches AS t ON t.customer_id = o.customer_id
WHERE t.touched_at < o.ts
  AND o.ts <= t.touched_at + toIntervalHour({window_hours:UInt32})
GROUP BY o.event_id, o.customer_id, o.order_id, o.ts, o.amount, o.currency
