-- The latest snapshot of every customer: by the event time it is as of, then by when it
-- was written (two snapshots can be as of the same instant, 013).
CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT
    customer_id,
    argMax(shop_id, (s.as_of, s.written_at))        AS shop_id,
    argMax(segment, (s.as_of, s.written_at))        AS segment,
    argMax(recency_days, (s.as_of, s.written_at))   AS recency_days,
    argMax(frequency, (s.as_of, s.written_at))      AS frequency,
    argMax(monetary, (s.as_of, s.written_at))       AS monetary,
    argMax(first_order_at, (s.as_of, s.written_at)) AS first_order_at,
    argMax(last_order_at, (s.as_of, s.written_at))  AS last_order_at,
    argMax(level, (s.as_of, s.written_at))          AS level,
    argMax(points, (s.as_of, s.written_at))         AS points,
    argMax(tags, (s.as_of, s.written_at))           AS tags,
    argMax(cart_items, (s.as_of, s.written_at))     AS cart_items,
    argMax(cart_value, (s.as_of, s.written_at))     AS cart_value,
    max(s.as_of)                                    AS as_of
FROM profile_snapshots AS s
GROUP BY customer_id;
