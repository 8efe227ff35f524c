-- The latest snapshot of every customer.
CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT
    customer_id,
    argMax(shop_id, s.as_of)        AS shop_id,
    argMax(segment, s.as_of)        AS segment,
    argMax(recency_days, s.as_of)   AS recency_days,
    argMax(frequency, s.as_of)      AS frequency,
    argMax(monetary, s.as_of)       AS monetary,
    argMax(first_order_at, s.as_of) AS first_order_at,
    argMax(last_order_at, s.as_of)  AS last_order_at,
    argMax(level, s.as_of)          AS level,
    argMax(points, s.as_of)         AS points,
    argMax(tags, s.as_of)           AS tags,
    argMax(cart_items, s.as_of)     AS cart_items,
    argMax(cart_value, s.as_of)     AS cart_value,
    max(s.as_of)                  AS as_of
FROM profile_snapshots AS s
GROUP BY customer_id
