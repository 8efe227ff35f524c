-- tag_counts: how many customers carry each tag now, and how the tag moved lately.
--
-- Parameters
--   {days:UInt32}  the recent period for added / removed, in days (default 30)
--
-- Customers now from each customer's latest profile snapshot (profiles_latest); changes
-- from tag_changes (rule tags of the programme file, and manual tags). One row per tag:
--   tag        the tag
--   customers  customers carrying it now
--   added      times it was set in the period
--   removed    times it fell off or was taken off in the period
SELECT
    tag,
    customers,
    added,
    removed
FROM
(
    SELECT arrayJoin(tags) AS tag, count() AS customers
    FROM profiles_latest
    GROUP BY tag
) AS now_carrying
FULL OUTER JOIN
(
    SELECT
        tag,
        countIf(op = 'added' AND at >= now64(3) - toIntervalDay({days:UInt32}))   AS added,
        countIf(op = 'removed' AND at >= now64(3) - toIntervalDay({days:UInt32})) AS removed
    FROM tag_changes
    GROUP BY tag
) AS moved USING (tag)
ORDER BY customers DESC, tag
