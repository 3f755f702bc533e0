-- Floodgate schema, version 12: who a team key may send to (Notify's KEY_TYPE_TEAM rule,
-- app/service/utils.py service_allowed_to_send_to): the service's team members and its
-- guest list. Floodgate has no user accounts, so a team member is just an address the
-- operator names. Both are read with the service and its keys (one round trip, cached by
-- ingest), so the check never queries the database per request.
CREATE TABLE service_team_members (
    service_id    uuid NOT NULL REFERENCES services (id),
    -- Lower-cased and trimmed, as Notify compares addresses (format_email_address).
    email_address text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, email_address)
);

-- Notify's service_guest_list (service_whitelist); only email recipients exist here.
CREATE TABLE service_guest_list (
    service_id     uuid NOT NULL REFERENCES services (id),
    recipient_type text NOT NULL DEFAULT 'email' CHECK (recipient_type = 'email'),
    -- Lower-cased and trimmed, as above.
    recipient      text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, recipient)
);
