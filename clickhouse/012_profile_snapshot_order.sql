-- A profile's snapshots are ordered by the event time they are as of, and then by when they
-- were written: a late or replayed event is decided at the customer's last time (as_of does
-- not move back), so two snapshots can share as_of, and the later write is the current one.
ALTER TABLE profile_snapshots ADD COLUMN IF NOT EXISTS written_at DateTime64(3, 'UTC') DEFAULT now64(3);

CREATE OR REPLACE VIEW profiles_latest AS
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
