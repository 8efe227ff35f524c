-- level_migration: which level members moved from and to in a period, and why.
--
-- Parameters
--   {since:DateTime64(3)}  start of the period (inclusive)
--   {until:DateTime64(3)}  end of the period (exclusive)
--
-- From every level change (level_changes); one row per move:
--   from_level   the level before (a new member starts on the lowest level, so an order
--                that makes a first-time buyer silver at once is a move from the lowest)
--   to_level     the level after
--   reason       upgrade | term_end | pinned
--   members      customers who moved so (a customer moving twice counts in both rows)
SELECT
    from_level,
    to_level,
    reason,
    uniqExact(customer_id) AS members
FROM level_changes
WHERE at >= {since:DateTime64(3)} AND at < {until:DateTime64(3)}
GROUP BY from_level, to_level, reason
ORDER BY members DESC, from_level, to_level
