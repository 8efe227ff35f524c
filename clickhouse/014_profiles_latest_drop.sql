-- profiles_latest is redefined by 015 to order snapshots by (as_of, written_at).
DROP VIEW IF EXISTS profiles_latest;
