-- Member updates (`ecrm.customers`, kind 'customer'): what the storefront said, as a JSON
-- object {joined_at, birthday, consent: {channel: granted}} (null for what it left out);
-- '{}' for every other kind. No names, phones or addresses: the contract carries none.
ALTER TABLE events ADD COLUMN IF NOT EXISTS attributes String DEFAULT '{}' AFTER origin
