-- segment_migration: where the customers of each segment at one instant were at another (migration matrix).
--
-- Parameters
--   {date_a:DateTime64(3, 'UTC')}  the first instant (a bare date means its midnight UTC)
--   {date_b:DateTime64(3, 'UTC')}  the second instant, usually later
--
-- One row per non-empty cell of the matrix (segment_a, segment_b), from segment_changes:
--   segment_a   the customer's segment at date_a: the to_segment of their latest change at or
--               before it; 'prospect' when they had none yet
--   segment_b   the same at date_b
--   customers   customers in the cell
--   share_of_a  customers / all customers in segment_a (Float64): the row-normalised matrix
--
-- Customers are those with at least one segment change at or before the later instant;
-- the diagonal (segment_a = segment_b) is those who stayed.
WITH
    at_both AS
    (
        SELECT
            customer_id,
            if(countIf(at <= {date_a:DateTime64(3, 'UTC')}) = 0, 'prospect',
               argMaxIf(to_segment, at, at <= {date_a:DateTime64(3, 'UTC')}))  AS segment_a,
            if(countIf(at <= {date_b:DateTime64(3, 'UTC')}) = 0, 'prospect',
               argMaxIf(to_segment, at, at <= {date_b:DateTime64(3, 'UTC')}))  AS segment_b
        FROM segment_changes
        WHERE at <= greatest({date_a:DateTime64(3, 'UTC')}, {date_b:DateTime64(3, 'UTC')})
        GROUP BY customer_id
    )
SELECT
    toString(segment_a)                                        AS segment_a,
    toString(segment_b)                                        AS segment_b,
    count()                                                    AS customers,
    customers / sum(customers) OVER (PARTITION BY segment_a)   AS share_of_a
FROM at_both
GROUP BY segment_a, segment_b
ORDER BY segment_a, customers DESC, segment_b
