-- Where an event came from: 'import' for the history `ecrm import` wrote (it built profiles
-- and rule state but marketed nothing), '' for live storefront traffic; any other value a
-- producer sent is kept as sent. Lets an analyst tell imported history from what happened
-- since the shop went live (e.g. GMV of live orders only: WHERE origin != 'import').
ALTER TABLE events ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT '' AFTER campaign
