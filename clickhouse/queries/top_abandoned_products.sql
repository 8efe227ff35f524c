-- top_abandoned_products: the products most often put in a cart and then not bought.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  cart adds from this instant (inclusive) ...
--   {until:DateTime64(3, 'UTC')}  ... to this one (exclusive), by event time
--   {window_hours:UInt32}         a cart add is abandoned when no paid order of the same customer containing the product follows within this many hours (default 24)
--   {limit:UInt32}                how many products (default 20)
--
-- Cart adds are `events` of kind 'cart', deduplicated by event_id. A paid order "contains"
-- the product when its items list the SKU; an order without items takes the whole cart (as
-- the profile does), so it contains every product. Orders count from the cart add's time
-- to window_hours after it. Cart adds whose window has not ended yet (now) are left out:
-- they are neither abandoned nor bought yet.
-- One row per SKU with at least one abandoned cart add, most abandoned first:
--   sku               the product
--   cart_adds         its cart adds in the period
--   abandoned         those not followed by a paid order containing it
--   abandon_rate      abandoned / cart_adds (Float64)
--   customers         distinct customers who abandoned it
--   abandoned_value   sum of qty * price of the abandoned cart adds
WITH
    carts AS
    (
        SELECT event_id, customer_id, sku, qty, price, ts
        FROM events
        WHERE kind = 'cart'
          AND ts >= {since:DateTime64(3, 'UTC')}
          AND ts < {until:DateTime64(3, 'UTC')}
          AND ts + toIntervalHour({window_hours:UInt32}) <= now64(3)
        LIMIT 1 BY event_id
    ),
    bought AS
    (
        SELECT
            customer_id,
            ts,
            arrayMap(item -> JSONExtractString(item, 'sku'), JSONExtractArrayRaw(items)) AS skus
        FROM paid_orders
        WHERE ts >= {since:DateTime64(3, 'UTC')}
          AND ts <= {until:DateTime64(3, 'UTC')} + toIntervalHour({window_hours:UInt32})
    ),
    followed AS
    (
        SELECT DISTINCT c.event_id AS event_id
        FROM carts AS c
        INNER JOIN bought AS b ON b.customer_id = c.customer_id
        WHERE b.ts >= c.ts
          AND b.ts <= c.ts + toIntervalHour({window_hours:UInt32})
          AND (empty(b.skus) OR has(b.skus, c.sku))
    )
SELECT
    sku,
    count()                                                    AS cart_adds,
    countIf(event_id NOT IN (SELECT event_id FROM followed))   AS abandoned,
    abandoned / cart_adds                                      AS abandon_rate,
    uniqExactIf(customer_id, event_id NOT IN (SELECT event_id FROM followed)) AS customers,
    sumIf(qty * price, event_id NOT IN (SELECT event_id FROM followed))       AS abandoned_value
FROM carts
GROUP BY sku
HAVING abandoned > 0
ORDER BY abandoned DESC, abandoned_value DESC, sku
LIMIT {limit:UInt32}
