-- profiles_latest is redefined by 034 to read the latest row per customer with FINAL.
DROP VIEW IF EXISTS profiles_latest
