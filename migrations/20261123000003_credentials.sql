-- Credential brokering (DESIGN.md, seed 000): credentials users link (GitHub tokens), sealed
-- with AES-256-GCM (key id in the ciphertext's header), never stored in clear; the grants of
-- each session, its broker token (a digest only), and the audit log of grants and broker calls.
CREATE TABLE linked_credentials (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('github')),
    hosts       text[] NOT NULL CHECK (cardinality(hosts) BETWEEN 1 AND 16),
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, kind)
);

-- Removed with the session (delete) or the credential (unlink): access ends at once.
CREATE TABLE session_credentials (
    session_id    uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    credential_id uuid NOT NULL REFERENCES linked_credentials (id) ON DELETE CASCADE,
    PRIMARY KEY (session_id, credential_id)
);
CREATE INDEX session_credentials_credential_idx ON session_credentials (credential_id);

CREATE TABLE session_broker_tokens (
    session_id   uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    token_digest bytea NOT NULL UNIQUE
);

-- No foreign keys: the record outlives the users, sessions and credentials it names.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    action        text NOT NULL,
    actor_id      uuid,
    session_id    uuid,
    credential_id uuid,
    detail        jsonb NOT NULL DEFAULT '{}'
);
