-- level_distribution: how many members each level holds now, their spend and points.
--
-- Parameters: none.
--
-- From each customer's latest profile snapshot (profiles_latest); customers who are not
-- members yet (no paid order, no points) are left out. One row per level:
--   level          the level id of the membership programme file
--   members        members on it
--   share          members / all members (Float64)
--   avg_monetary   net spend in the RFM window (Float64)
--   points         spendable points its members hold
SELECT
    level,
    count()                              AS members,
    members / sum(members) OVER ()       AS share,
    avg(toFloat64(monetary))             AS avg_monetary,
    sum(held)                            AS points
FROM (SELECT level, monetary, points AS held FROM profiles_latest)
WHERE level != ''
GROUP BY level
ORDER BY members DESC, level
