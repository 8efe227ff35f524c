-- The old MergeTree profile_snapshots, copied by 030; 033 recreates it as a ReplacingMergeTree.
DROP TABLE IF EXISTS profile_snapshots
