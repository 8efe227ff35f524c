-- rule_decisions: every rule's decisions by outcome (fired, held out, deferred, suppressed and why), and the event time they reach.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  decisions from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by decided_at
--
-- One row per (rule, outcome, reason), counting distinct actions (a decision stored twice
-- counts once); `ecrm demo` prints these after ClickHouse has caught up with the worker:
--   rule_id, outcome (fired | held_out | deferred | suppressed), reason ('' when fired)
--   decisions       distinct action_id
--   last_decided_at the latest decided_at: the event time the figures reach
SELECT
    rule_id,
    outcome,
    reason,
    uniqExact(action_id) AS decisions,
    max(decided_at)      AS last_decided_at
FROM rule_decisions
WHERE decided_at >= {since:DateTime64(3, 'UTC')}
  AND decided_at < {until:DateTime64(3, 'UTC')}
GROUP BY rule_id, outcome, reason
ORDER BY rule_id, outcome, reason
