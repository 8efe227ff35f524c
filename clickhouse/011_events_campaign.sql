-- Campaign events (`ecrm campaign send`, kind 'campaign') are stored in `events` for audit:
-- who a campaign selected and when. `campaign` names the campaign; '' for every other kind.
ALTER TABLE events ADD COLUMN IF NOT EXISTS campaign LowCardinality(String) DEFAULT '' AFTER url
