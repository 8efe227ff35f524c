-- points_liability: points outstanding by the month they lapse — what finance asks.
--
-- Parameters
--   {timezone:String}  the shop's time zone, for the month a lot lapses in (default Asia/Shanghai)
--
-- From the points ledger (points_ledger): every movement carries the lot it concerns and
-- when that lot lapses, so the movements of the lots that lapse in a month add up to what
-- they still hold. One row per month, soonest first; NULL for points that never lapse
-- (expiry mode inactivity or never, and a debt left by `refund: unlimited`):
--   expiry_month    first day of the month of the last instant the points can be spent
--                   (shop's zone; a lot lapsing at midnight on 1 January counts in December;
--                   NULL: never)
--   members         customers holding such points
--   points          spendable points outstanding
--   pending_points  points earned by orders still in their return window (not spendable yet)
SELECT
    toStartOfMonth(expires_at - toIntervalMillisecond(1), {timezone:String}) AS expiry_month,
    uniqExactIf(customer_id, pending = 0 AND kind != 'refused')     AS members,
    sumIf(change, pending = 0 AND kind != 'refused')                AS points,
    sumIf(change, pending = 1) - sumIf(change, kind = 'unlocked')   AS pending_points
FROM (SELECT customer_id, kind, pending, expires_at, points AS change FROM points_ledger)
GROUP BY expiry_month
HAVING points != 0 OR pending_points != 0
ORDER BY expiry_month NULLS LAST
