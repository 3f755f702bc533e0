-- Floodgate schema, version 10: a service's reply-to addresses (Notify's
-- service_email_reply_to). A notification names one by `email_reply_to_id`; without one it
-- gets the service's default, if any. Archived addresses stay for the notifications that
-- named them but are refused for new ones.
CREATE TABLE service_email_reply_to (
    id            uuid PRIMARY KEY,
    service_id    uuid NOT NULL REFERENCES services (id),
    email_address text NOT NULL,
    is_default    boolean NOT NULL DEFAULT false,
    archived      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- A service's default is its newest unarchived default address, so adding a new default
-- needs no update of the old one.
CREATE INDEX service_email_reply_to_service ON service_email_reply_to (service_id, created_at);
