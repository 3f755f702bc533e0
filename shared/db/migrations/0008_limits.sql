-- Floodgate schema, version 8: each service's limits, read with its keys (and cached) by
-- ingest; the counts themselves live in the limit store (DynamoDB), never here, so no
-- request ever counts rows of the notifications table. Defaults are Notify's: 3,000
-- requests per minute per key type, 250,000 emails a day.
ALTER TABLE services
    ADD COLUMN rate_limit integer NOT NULL DEFAULT 3000 CHECK (rate_limit > 0),
    ADD COLUMN daily_limit integer NOT NULL DEFAULT 250000 CHECK (daily_limit >= 0);
