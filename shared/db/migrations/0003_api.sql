-- Floodgate schema, version 3: what the public API needs.

-- `ApiKey-v1 <secret>` (GC Notify) sends the secret alone, with no service id to narrow the
-- search, and the secret itself is only stored encrypted (non-deterministically). The
-- SHA-256 of the secret finds the key in one index probe. Secrets are 122 random bits (a
-- UUIDv4), so an unsalted digest reveals nothing a brute force could use.
ALTER TABLE api_keys ADD COLUMN secret_digest bytea;
CREATE UNIQUE INDEX api_keys_by_secret_digest ON api_keys (secret_digest)
    WHERE secret_digest IS NOT NULL;

