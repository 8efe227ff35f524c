-- A profile's snapshots are ordered by the event time they are as of, and then by when they
-- were written: a late or replayed event is decided at the customer's last time (as_of does
-- not move back), so two snapshots can share as_of, and the later write is the current one.
ALTER TABLE profile_snapshots ADD COLUMN IF NOT EXISTS written_at DateTime64(3, 'UTC') DEFAULT now64(3);
