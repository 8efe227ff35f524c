-- event_sources: the input topic-partitions `ecrm rules backtest` reads history from.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}, {until:DateTime64(3, 'UTC')}   the window, by event time
SELECT DISTINCT source_topic, source_partition
FROM events
WHERE ts >= {since:DateTime64(3, 'UTC')}
  AND ts < {until:DateTime64(3, 'UTC')}
ORDER BY source_topic, source_partition
